//! `dispatch schema [--nickel]`: the JSON schema or the Nickel contract of specs.

use super::CommandError;
use crate::spec;

/// Arguments of `dispatch schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the Nickel contract instead of the JSON schema.
    #[arg(long)]
    pub nickel: bool,
}

/// Prints the schema.
pub fn run(args: Args) -> Result<u8, CommandError> {
    if args.nickel {
        print!("{}", spec::contract::nickel_contract());
    } else {
        print!("{}", spec::schema_json());
    }
    Ok(0)
}
