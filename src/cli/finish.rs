//! Finishing a run from its journal: the heart of `resume`, which `retry` and `answer` reach
//! after setting units of the run back to pending ([`reopen`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::session::{self, Output};
use super::state_dir::{self, StateDirArgs};
use super::{runner, CommandError, Ui};
use crate::exec::RunOptions;
use crate::plan::{self, target::Found};
use crate::vocab::{NodeKind, NodeStatus, RunStatus};

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
    let (dir, db) = state.open()?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let Some(run) = db.run(Some(run))? else {
        return Err(CommandError::failure(format_args!(
            "no run {run} in {}",
            dir.display()
        )));
    };
    if run.status != RunStatus::Running {
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
    let (stored, found) = db.recorded(&run.id)?;
    // The targets the forge gave when the run started, not what it says now.
    if let Some(found) = found.and_then(|f| serde_json::from_str::<Found>(&f).ok()) {
        loaded.expand(&found);
    }
    let mut current = plan::build(&loaded);
    let units = db.units(&run.id)?;
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
    db.set_runner(&run.id, pid)?;
    drop(db);
    runtime.block_on(async move {
        let session = session::connect(&loaded, &current, dir).await?;
        // Containers of the run that no node will collect (a QA step, a node that ended) go.
        let keep: std::collections::HashSet<String> = units
            .iter()
            .flat_map(|u| &u.nodes)
            .filter(|n| {
                n.status == NodeStatus::Running
                    && matches!(n.kind, NodeKind::Agent | NodeKind::Review)
            })
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
        session::execute_and_report(
            loaded,
            Arc::new(current),
            run.id.clone(),
            session,
            options,
            output,
            Some(units),
        )
        .await
    })
}

/// Sets units of run `run` in `dir` back to pending from the node `from` on (`prep` re-runs
/// the whole unit), reopens the run, and finishes it like `dispatch resume`.
pub fn reopen(
    ui: &Ui,
    dir: PathBuf,
    run: &str,
    units: &[String],
    from: NodeKind,
    output: Output,
) -> Result<u8, CommandError> {
    state_dir::open(&dir)?.reopen(run, units, from)?;
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
