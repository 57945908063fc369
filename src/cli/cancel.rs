//! `dispatch cancel RUN`: stop a run from another terminal.

use std::time::Duration;

use super::state_dir::{sql, StateDirArgs};
use super::{runner, CommandError};
use crate::spec::problem::plural;
use crate::state::{self, views};

/// Arguments of `dispatch cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id.
    pub run: String,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDirArgs,
}

/// Stops a run from another terminal: the runner gets the two interrupts Ctrl-C would send
/// (it stops its containers and marks their units `cancelled`); a runner that is gone has its
/// containers removed and its unfinished nodes marked here.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let (dir, conn) = args.state.open()?;
    let Some(run) = views::run(&conn, Some(&args.run)).map_err(sql(&dir))? else {
        return Err(CommandError::failure(format_args!(
            "no run {} in {}",
            args.run,
            dir.display()
        )));
    };
    if run.status != "running" {
        println!("run {} already ended ({})", run.id, run.status);
        return Ok(0);
    }
    if runner::alive(run.pid) {
        for _ in 0..2 {
            // SAFETY: kill has no memory-safety preconditions; the pid is the runner's.
            unsafe {
                libc::kill(run.pid as i32, libc::SIGINT);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("asked the runner (pid {}) to stop run {}; it stops its containers and marks their units cancelled", run.pid, run.id);
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
    let marked = conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         UPDATE nodes SET status = 'cancelled', reason = 'cancelled by dispatch cancel' WHERE run_id = '{id}' AND status IN ('pending', 'ready', 'running');
         UPDATE units SET outcome = 'cancelled', reason = 'cancelled by dispatch cancel' WHERE run_id = '{id}' AND outcome IS NULL;
         UPDATE runs SET status = 'cancelled', finished_at = {now} WHERE id = '{id}';
         COMMIT;",
        id = run.id.replace('\'', "''"),
        now = state::now()
    ));
    marked.map_err(sql(&dir))?;
    println!("run {}: the runner was gone; removed {removed} {} and marked its unfinished units cancelled", run.id, plural(removed, "container"));
    Ok(0)
}
