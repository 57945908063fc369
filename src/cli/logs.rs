//! `dispatch logs RUN NODE`: a node's log; `--follow` keeps printing while it runs.
//!
//! The log is what a container wrote. Piped or redirected, its bytes pass unchanged; on a
//! terminal, its control sequences are made visible ([`crate::report::text::shown_bytes`],
//! newlines and tabs kept), so an agent's output cannot drive the terminal.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::state_dir::StateDirArgs;
use super::CommandError;
use crate::report::text;

/// Arguments of `dispatch logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id.
    pub run: String,
    /// Node id, e.g. `fix-tests/core/go-io:agent`.
    pub node: String,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Keep printing while the node runs.
    #[arg(long, short)]
    pub follow: bool,
    /// The raw JSON events of an agent or review node (`meta/<kind>.jsonl`), as its CLI
    /// prints them: what to follow while the agent runs, since the readable log is written
    /// from them when its container ends.
    #[arg(long)]
    pub raw: bool,
}

/// Prints a node's log.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    let Some(location) = db.node(&args.run, &args.node)? else {
        return Err(CommandError::failure(format_args!(
            "run {} has no node {}",
            args.run, args.node
        )));
    };
    let log = dir.join(&location.workspace).join("meta").join(format!(
        "{}.{}",
        location.kind,
        if args.raw { "jsonl" } else { "log" }
    ));
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    // What of `buffer` goes out now: all when piped or at the end; on a terminal, all but a
    // character a read split (the next read completes it), made visible.
    let show =
        |stdout: &mut std::io::Stdout, buffer: &[u8], last: bool| -> std::io::Result<usize> {
            let taken = if terminal {
                let taken = if last {
                    buffer.len()
                } else {
                    text::settled(buffer)
                };
                stdout.write_all(text::shown_bytes(&buffer[..taken]).as_bytes())?;
                taken
            } else {
                stdout.write_all(buffer)?;
                buffer.len()
            };
            stdout.flush()?;
            Ok(taken)
        };
    loop {
        // The log lives where containers write: a link planted there is not followed, and a
        // FIFO or a device is not read.
        let open = || -> std::io::Result<std::fs::File> {
            let file = crate::runtime::mounted::std_open_options()
                .read(true)
                .open(&log)?;
            crate::runtime::mounted::regular(&file.metadata()?, &log)?;
            Ok(file)
        };
        let opened = open();
        if let Err(error) = &opened {
            if error.kind() == std::io::ErrorKind::InvalidData {
                return Err(CommandError::failure(error));
            }
        }
        if let Ok(mut file) = opened {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buffer = Vec::new();
                if file.read_to_end(&mut buffer).is_ok() {
                    match show(&mut stdout, &buffer, !args.follow) {
                        Ok(taken) => offset += taken as u64,
                        Err(_) => return Ok(0), // the reader went away (a pipe closed)
                    }
                }
            }
        } else if !args.follow {
            return Err(CommandError::failure(format_args!(
                "node {} has no log yet ({})",
                args.node,
                log.display()
            )));
        }
        if !args.follow {
            return Ok(0);
        }
        let running = db
            .node(&args.run, &args.node)
            .ok()
            .flatten()
            .is_some_and(|node| !node.status.is_terminal());
        if !running {
            // One last read catches what was written before the node ended.
            if let Ok(mut file) = open() {
                let mut buffer = Vec::new();
                if file.seek(SeekFrom::Start(offset)).is_ok()
                    && file.read_to_end(&mut buffer).is_ok()
                {
                    let _ = show(&mut stdout, &buffer, true);
                }
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
