//! Finishing a run from its journal: the heart of `resume`, which `retry` and `answer` reach
//! after setting units of the run back to pending ([`reopen`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::output::Output;
use super::session;
use super::state_dir::{self, StateDirArgs};
use super::{runner, CommandError, Ui};
use crate::exec::RunOptions;
use crate::plan::{self, target::Found};
use crate::state::lock::{self, Lock};
use crate::state::views::RunRow;
use crate::state::Db;
use crate::vocab::{Hold, NodeKind, NodeStatus, RunStatus};

/// Finishes run `run` of the state directory `state`: finished nodes are not run again,
/// containers that still run (or exited meanwhile) are collected, every other container of
/// the run is removed. A run that ended already is left alone (status 0), unless units of it
/// were held back (by the budget, a halted rollout, `max_open_prs`): those start again as the
/// spec and the forge allow now, from prep (from publish when only their PR waited; a halted
/// rollout's failure rate is counted afresh). A run of a spec whose lock another runner holds
/// is refused, naming it.
pub fn finish(
    ui: &Ui,
    state: &StateDirArgs,
    run: &str,
    options: RunOptions,
    output: Output,
) -> Result<u8, CommandError> {
    let (dir, db) = state.open()?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let found = row(&dir, &db, run)?;
    if held(&db, &found)?.is_empty() {
        if let Some(ended) = ended(&db, &found, output)? {
            return Ok(ended);
        }
    }
    let (run, lock) = hold(&dir, &db, run)?;
    let held = held(&db, &run)?;
    if !held.is_empty() {
        for hold in Hold::ALL {
            let ids: Vec<String> = (held.iter())
                .filter(|(_, h)| *h == hold)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            eprintln!(
                "{} unit{} of run {} held back by {} start{} again: {}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                run.id,
                hold.describe(),
                if ids.len() == 1 { "s" } else { "" },
                ids.join(", ")
            );
            db.reopen(&run.id, &ids, hold.resumes_from())?;
        }
        let run = row(&dir, &db, &run.id)?;
        let options = RunOptions {
            continues_halt: held.iter().any(|(_, h)| *h == Hold::Rollout),
            ..options
        };
        return finish_held(ui, dir, db, run, lock, options, output);
    }
    if let Some(ended) = ended(&db, &run, output)? {
        return Ok(ended);
    }
    finish_held(ui, dir, db, run, lock, options, output)
}

/// The units of an ended run that were held back (`skipped` by the budget or a halted
/// rollout), with what held them, which a resume starts again; none while the run runs (its
/// runner decides).
fn held(db: &Db, run: &RunRow) -> Result<Vec<(String, Hold)>, CommandError> {
    if run.status == RunStatus::Running {
        return Ok(Vec::new());
    }
    Ok(db
        .units(&run.id)?
        .into_iter()
        .filter_map(|u| Some((u.id, u.held?)))
        .collect())
}

/// Status 0 for a run that ended already, after saying so: on stderr when stdout is a CI
/// document (`--output junit|markdown`), which is then printed as `status` prints it.
fn ended(db: &Db, run: &RunRow, output: Output) -> Result<Option<u8>, CommandError> {
    if run.status == RunStatus::Running {
        return Ok(None);
    }
    let message = format!(
        "run {} already ended ({}); nothing to resume",
        run.id, run.status
    );
    match super::output::document(output, run, &db.units(&run.id)?) {
        Some(document) => {
            eprintln!("{message}");
            print!("{document}");
        }
        None => println!("{message}"),
    }
    Ok(Some(0))
}

/// The journal's row of run `run` in `dir`, or an error naming both.
fn row(dir: &Path, db: &Db, run: &str) -> Result<RunRow, CommandError> {
    db.run(Some(run))?
        .ok_or_else(|| CommandError::failure(format_args!("no run {run} in {}", dir.display())))
}

/// Takes the lock of the spec of run `run` in `dir` for this process ([`runner::take`]), and
/// reads the run's row again under it, as no other runner can change it now. The lock is this
/// process's until it ends: what `resume`, `retry` and `answer` hold before they change
/// anything of the run or its workspaces.
pub fn hold(dir: &Path, db: &Db, run: &str) -> Result<(RunRow, Lock), CommandError> {
    let found = row(dir, db, run)?;
    let lock = runner::take(dir, &found.spec_path, &found.id)?;
    Ok((row(dir, db, run)?, lock))
}

/// [`finish`] with the spec's lock held.
fn finish_held(
    ui: &Ui,
    dir: PathBuf,
    db: Db,
    run: RunRow,
    lock: Lock,
    options: RunOptions,
    output: Output,
) -> Result<u8, CommandError> {
    let source = super::source::Source::of_run(&dir, &run.spec_path)?;
    let mut loaded = source.load(ui)?;
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
    db.set_runner(&run.id, pid, lock::process_start(pid))?;
    super::detach::ready(&run.id);
    drop(db);
    runtime.block_on(async move {
        // Held until the run is over.
        let _lock = lock;
        // A one-call run shares its defaults spec's limits with the others: queued until free.
        let _slots = source.shared_slots(&dir, &loaded, &current).await?;
        let session = session::connect(&loaded, &current, dir, run.runtime).await?;
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
            .runtime
            .list(&run.id)
            .await
            .map_err(CommandError::failure)?;
        for container in containers.iter().filter(|c| !keep.contains(&c.id)) {
            let _ = session.runtime.remove(&container.id).await;
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
/// the whole unit), reopens the run, and finishes it like `dispatch resume`; `lock` is the
/// run's spec lock ([`hold`]), taken before anything changed.
pub fn reopen(
    ui: &Ui,
    dir: PathBuf,
    lock: Lock,
    run: &str,
    units: &[String],
    from: NodeKind,
    output: Output,
) -> Result<u8, CommandError> {
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let db = state_dir::open(&dir)?;
    db.reopen(run, units, from)?;
    let run = row(&dir, &db, run)?;
    finish_held(
        ui,
        dir,
        db,
        run,
        lock,
        RunOptions {
            keep_containers: false,
            no_cache: false,
            continues_halt: false,
        },
        output,
    )
}
