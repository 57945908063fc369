//! `dispatch logs RUN NODE`: a node's log; `--follow` keeps printing while it runs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::state_dir::StateDirArgs;
use super::CommandError;

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
    let log = dir
        .join(&location.workspace)
        .join("meta")
        .join(format!("{}.log", location.kind));
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
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
                    offset += buffer.len() as u64;
                    if stdout
                        .write_all(&buffer)
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(0); // the reader went away (a pipe closed)
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
                let _ = file.seek(SeekFrom::Start(offset));
                let _ = std::io::copy(&mut file, &mut stdout);
            }
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
