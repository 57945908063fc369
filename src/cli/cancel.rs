//! `dispatch cancel RUN`: stop a run from another terminal.

use super::runner::{self, Runner};
use super::state_dir::StateDirArgs;
use super::CommandError;
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
/// too). Only a runner [`runner::check`] verifies is signalled; one it cannot verify gets no
/// signal and the command fails saying why. A runner that is gone has its containers removed
/// and its unfinished nodes marked here, under its spec's lock when no other run holds it.
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
    let (why, _lock) = match runner::check(&dir, &run)? {
        Runner::Active { pid, start } => {
            let signal = if args.force {
                libc::SIGUSR1
            } else {
                libc::SIGTERM
            };
            runner::signal(pid, start, signal).map_err(|why| {
                CommandError::failure(format_args!(
                    "cannot signal the runner of run {}: {why}; no signal was sent",
                    run.id
                ))
            })?;
            if args.force {
                println!("asked the runner (pid {pid}) to stop run {} now; it stops its containers and marks their units cancelled", run.id);
            } else {
                println!("asked the runner (pid {pid}) to stop run {}; running nodes finish, the units that did not start end cancelled (`dispatch cancel --force` stops the containers too)", run.id);
            }
            return Ok(0);
        }
        Runner::Unverified(why) => {
            return Err(CommandError::failure(format_args!(
                "cannot verify the runner of run {}: {why}; no signal was sent",
                run.id
            ))
            .hint(format!(
                "`dispatch status {} --state-dir {}` shows the run; cancel it again once its runner is known.",
                run.id,
                dir.display()
            )))
        }
        // Another run of the spec holds the lock: this one's runner is gone for sure.
        Runner::Gone { other: Some(other) } => (format!("{other} holds its spec's lock"), None),
        // Nobody holds it: hold it while cleaning up, so no resume starts meanwhile.
        Runner::Gone { other: None } => (
            "nothing holds its spec's lock".to_owned(),
            Some(runner::take(&dir, &run.spec_path, &run.id)?),
        ),
    };
    let runtime = super::tokio_runtime(false)?;
    let removed = runtime.block_on(async {
        use crate::runtime::any::AnyRuntime;
        use crate::runtime::Runtime;
        let engine = match run.runtime {
            crate::spec::model::RuntimeKind::Docker => AnyRuntime::Docker(
                crate::runtime::docker::Docker::connect()
                    .await
                    .map_err(CommandError::failure)?,
            ),
            // The cluster's settings are the spec's.
            crate::spec::model::RuntimeKind::Kubernetes => {
                let loaded =
                    crate::spec::load(std::path::Path::new(&run.spec_path)).map_err(|e| {
                        CommandError::failure(format_args!(
                            "cannot read {} for its cluster's settings: {e}",
                            run.spec_path
                        ))
                    })?;
                let cluster = super::session::kubernetes(&loaded).await?;
                AnyRuntime::Kubernetes(Box::new(cluster))
            }
        };
        let containers = engine.list(&run.id).await.map_err(CommandError::failure)?;
        for container in &containers {
            engine
                .remove(&container.id)
                .await
                .map_err(CommandError::failure)?;
        }
        Ok::<usize, CommandError>(containers.len())
    });
    let removed = removed?;
    db.cancel_orphans(&run.id, "cancelled by dispatch cancel")?;
    println!("run {}: its runner is gone ({why}), so no process was signalled; removed {removed} {} and marked its unfinished units cancelled", run.id, plural(removed, "container"));
    Ok(0)
}
