//! `dispatch man [COMMAND]`: the manual page in roff, generated from the command definitions
//! (clap_mangen): `dispatch(1)` with every command listed, or `dispatch-COMMAND(1)` for one.

use clap::CommandFactory;

use super::{Cli, CommandError};

/// Arguments of `dispatch man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A command whose own page to print (e.g. `run`); default: the page of `dispatch`.
    pub command: Option<String>,
}

/// Prints the page.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let top = Cli::command();
    let page = match &args.command {
        None => top,
        Some(name) => {
            let Some(sub) = top.find_subcommand(name) else {
                let names: Vec<&str> = top.get_subcommands().map(|c| c.get_name()).collect();
                return Err(CommandError::invalid(format_args!(
                    "dispatch has no command `{name}`"
                ))
                .hint(format!("Commands: {}.", names.join(", "))));
            };
            let name = sub.get_name();
            sub.clone()
                .display_name(format!("dispatch-{name}"))
                .bin_name(format!("dispatch {name}"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("dispatch {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff)
        .map_err(|error| CommandError::failure(format_args!("cannot render the page: {error}")))?;
    super::write_stdout(&roff)
}
