//! Finishing a run from its journal: the heart of `resume`, which `retry` and `answer` reach
//! after setting units of the run back to pending ([`reopen`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::session::{self, Output};
use super::state_dir::{self, sql, StateDirArgs};
use super::{runner, CommandError, Ui};
use crate::exec::RunOptions;
use crate::plan::{self, target::Found};
use crate::state;

/// Finishes run `run` of the state directory `state`: finished nodes are not run again,
/// containers that still run (or exited meanwhile) are collected, every other container of
/// the run is removed. A run that ended already is left alone (status 0).
pub fn finish(
    ui: &Ui,
    state: &StateDirArgs,
    run: &str,
    options: RunOptions,
    output: Output,
) -> Result<u8, CommandError> {
    let (dir, conn) = state.open()?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let run = match state::views::run(&conn, Some(run)) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err(CommandError::failure(format_args!(
                "no run {run} in {}",
                dir.display()
            )))
        }
        Err(error) => return Err(sql(&dir)(error)),
    };
    if run.status != "running" {
        println!(
            "run {} already ended ({}); nothing to resume",
            run.id, run.status
        );
        return Ok(0);
    }
    if runner::alive(run.pid) && run.pid != i64::from(std::process::id()) {
        return Err(CommandError::failure(format_args!(
            "run {} is still active (runner pid {}); it cannot be resumed twice",
            run.id, run.pid
        )));
    }
    let mut loaded = ui.load_spec(Path::new(&run.spec_path))?;
    let (stored, found): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT plan, found_json FROM runs WHERE id = ?1",
            [&run.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((None, None));
    // The targets the forge gave when the run started, not what it says now.
    if let Some(found) = found.and_then(|f| serde_json::from_str::<Found>(&f).ok()) {
        loaded.expand(&found);
    }
    let mut current = plan::build(&loaded);
    let units = state::views::units(&conn, &run.id).map_err(sql(&dir))?;
    // A run started with --only holds a subset of the plan.
    let ids: std::collections::HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
    let planned = current.units.len();
    current.retain_units(|u| ids.contains(u.id.as_str()));
    let outside = planned - current.units.len();
    if outside > 0 {
        eprintln!(
            "note: {outside} unit{} the spec plans now {} not part of run {} (it started with --only, or the spec gained them since); `dispatch run {}` runs them",
            if outside == 1 { "" } else { "s" },
            if outside == 1 { "is" } else { "are" },
            run.id,
            run.spec_path
        );
    }
    if !stored.is_some_and(|stored| plan::same_plan(&stored, &current)) {
        return Err(CommandError::failure(format_args!("{} changed since run {} started, so it cannot be resumed safely; start over with `dispatch run --new {}`", run.spec_path, run.id, run.spec_path)));
    }
    let runtime = super::tokio_runtime(true)?;
    let pid = std::process::id();
    conn.execute(
        "UPDATE runs SET pid = ?2 WHERE id = ?1",
        rusqlite::params![run.id, pid],
    )
    .map_err(sql(&dir))?;
    drop(conn);
    runtime.block_on(async move {
        let session = session::connect(&loaded, &current, dir).await?;
        // Containers of the run that no node will collect (a QA step, a node that ended) go.
        let keep: std::collections::HashSet<String> = units
            .iter()
            .flat_map(|u| &u.nodes)
            .filter(|n| n.status == "running" && matches!(n.kind.as_str(), "agent" | "review"))
            .filter_map(|n| n.container_id.clone())
            .collect();
        use crate::runtime::Runtime;
        let containers = session
            .docker
            .list(&run.id)
            .await
            .map_err(CommandError::failure)?;
        for container in containers.iter().filter(|c| !keep.contains(&c.id)) {
            let _ = session.docker.remove(&container.id).await;
        }
        Ok(session::execute_and_report(
            loaded,
            Arc::new(current),
            run.id.clone(),
            session,
            options,
            output,
            Some(units),
        )
        .await)
    })
}

/// Sets units of run `run` in `dir` back to pending from the node `from` on (`prep` re-runs
/// the whole unit), reopens the run, and finishes it like `dispatch resume`.
pub fn reopen(
    ui: &Ui,
    dir: PathBuf,
    run: &str,
    units: &[String],
    from: &str,
    output: Output,
) -> Result<u8, CommandError> {
    let conn = state_dir::open(&dir)?;
    let order = ["prep", "agent", "qa", "publish", "review", "merge"];
    let from_rank = order.iter().position(|k| *k == from).unwrap_or(0);
    let kinds: Vec<String> = order[from_rank..]
        .iter()
        .map(|k| format!("'{k}'"))
        .collect();
    let reopened = (|| -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        for unit in units {
            tx.execute(
                &format!("UPDATE nodes SET status = 'pending', attempts = 0, container_id = NULL, exit_code = NULL, reason = NULL WHERE run_id = ?1 AND unit_id = ?2 AND kind IN ({})", kinds.join(", ")),
                rusqlite::params![run, unit],
            )?;
            tx.execute(
                "UPDATE units SET outcome = NULL, reason = NULL WHERE run_id = ?1 AND id = ?2",
                rusqlite::params![run, unit],
            )?;
        }
        tx.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?1",
            [run],
        )?;
        tx.commit()
    })();
    reopened.map_err(sql(&dir))?;
    drop(conn);
    finish(
        ui,
        &StateDirArgs::dir(dir),
        run,
        RunOptions {
            keep_containers: false,
            no_cache: false,
        },
        output,
    )
}
