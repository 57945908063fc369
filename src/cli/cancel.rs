//! `dispatch cancel RUN`: stop a run from another terminal.

use super::state_dir::StateDirArgs;
use super::{runner, CommandError};
use crate::spec::problem::plural;
use crate::vocab::RunStatus;

/// Arguments of `dispatch cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id.
    pub run: String,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Stop the running containers now (their units end cancelled) instead of letting running
    /// nodes finish.
    #[arg(long)]
    pub force: bool,
}

/// Stops a run from another terminal. The runner gets one SIGTERM, which it takes like the
/// first Ctrl-C (nothing new starts, running nodes finish, the rest ends `cancelled`), or with
/// `--force` one SIGUSR1, which it takes like a second Ctrl-C (running containers are stopped
/// too). A runner that is gone has its containers removed and its unfinished nodes marked
/// here.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    let Some(run) = db.run(Some(&args.run))? else {
        return Err(CommandError::failure(format_args!(
            "no run {} in {}",
            args.run,
            dir.display()
        )));
    };
    if run.status != RunStatus::Running {
        println!("run {} already ended ({})", run.id, run.status);
        return Ok(0);
    }
    if runner::alive(run.pid) {
        let signal = if args.force {
            libc::SIGUSR1
        } else {
            libc::SIGTERM
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is the runner's.
        if unsafe { libc::kill(run.pid as i32, signal) } != 0 {
            return Err(CommandError::failure(format_args!(
                "cannot signal the runner (pid {}) of run {}: {}",
                run.pid,
                run.id,
                std::io::Error::last_os_error()
            )));
        }
        if args.force {
            println!("asked the runner (pid {}) to stop run {} now; it stops its containers and marks their units cancelled", run.pid, run.id);
        } else {
            println!("asked the runner (pid {}) to stop run {}; running nodes finish, the units that did not start end cancelled (`dispatch cancel --force` stops the containers too)", run.pid, run.id);
        }
        return Ok(0);
    }
    let runtime = super::tokio_runtime(false)?;
    let removed = runtime.block_on(async {
        use crate::runtime::Runtime;
        let docker = crate::runtime::docker::Docker::connect()
            .await
            .map_err(|e| e.to_string())?;
        let containers = docker.list(&run.id).await.map_err(|e| e.to_string())?;
        for container in &containers {
            docker
                .remove(&container.id)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<usize, String>(containers.len())
    });
    let removed = removed.map_err(CommandError::failure)?;
    db.cancel_orphans(&run.id, "cancelled by dispatch cancel")?;
    println!("run {}: the runner was gone; removed {removed} {} and marked its unfinished units cancelled", run.id, plural(removed, "container"));
    Ok(0)
}
