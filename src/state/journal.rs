//! The writer of the journal: one thread owns the write connection and commits every batch of
//! queued writes in one transaction before acknowledging them (group commit).
//!
//! Invariants:
//! - writes commit in the order they were queued, so an event queued before another is never
//!   seen after it;
//! - every write's acknowledgement is called exactly once: with the commit's result, or with
//!   "the journal writer stopped" when the writer is gone (nobody waits forever);
//! - a failed batch fails every write in it and the writer goes on with the next batch.
//!
//! Callers never see SQL: they queue [`RunEvent`]s ([`Journal::record`],
//! [`Journal::record_then`], [`Journal::record_now`]), record a run ([`Journal::record_run`])
//! or the local forge's pull requests ([`Journal::upsert_pr`], [`Journal::pr_merged`],
//! [`Journal::pr_withdraw`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::event::{NewRun, PoolStart, RunEvent};
use super::{connect, now, now_ms, reserve, StateError, DB_FILE};

/// A write: it may run twice, when its first transaction failed on a full disk and the
/// reserve was given back ([`super::reserve`]).
type Write = Box<dyn FnMut(&Transaction<'_>) -> rusqlite::Result<()> + Send>;

/// What the writer calls once a write's transaction ended (committed, or failed with why).
/// It is called exactly once: a write dropped unwritten (the writer thread is gone) reports
/// that the writer stopped.
struct Done(Option<Then>);

/// The callback inside [`Done`].
type Then = Box<dyn FnOnce(Result<(), String>) + Send>;

impl Done {
    fn report(mut self, result: Result<(), String>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err("the journal writer stopped".to_owned()));
        }
    }
}

/// The writer of the journal. Cloning shares the one writer thread.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<(Write, Option<Done>)>,
    path: PathBuf,
    /// Turns true once a commit found the disk full and used the reserve.
    disk_full: tokio::sync::watch::Receiver<bool>,
}

/// A pull request of the local forge to record (created, or updated when its branch has one).
#[derive(Clone, Debug)]
pub struct NewPr {
    /// Organisation.
    pub org: String,
    /// Repository.
    pub repo: String,
    /// Head branch.
    pub branch: String,
    /// Base branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Run that writes it.
    pub run_id: String,
    /// Unit that owns it.
    pub unit_id: String,
}

impl Journal {
    /// Starts the writer thread on the state directory's database, with the state
    /// directory's reserve made ([`super::reserve::keep`]): an error when the disk cannot
    /// hold it.
    pub fn start(dir: &Path) -> Result<Self, StateError> {
        // The reserve first: on a disk too full for it, the database would fail with less
        // helpful words.
        super::create_dir(dir)?;
        reserve::keep(dir).map_err(|error| StateError::NoReserve {
            path: dir.to_path_buf(),
            error,
        })?;
        let mut conn = connect(dir)?;
        let path = dir.join(DB_FILE);
        let state_dir = dir.to_path_buf();
        let (full_tx, disk_full) = tokio::sync::watch::channel(false);
        let (tx, rx) = mpsc::channel::<(Write, Option<Done>)>();
        std::thread::Builder::new()
            .name("dispatch-journal".to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = commit(&mut conn, &mut batch, &state_dir, &full_tx);
                    if let Err(error) = &result {
                        tracing::error!(%error, "the journal could not commit {} writes", batch.len());
                    }
                    for (_, done) in batch {
                        if let Some(done) = done {
                            done.report(result.clone());
                        }
                    }
                }
            })
            .map_err(|error| StateError::Io {
                path: path.clone(),
                error,
            })?;
        Ok(Self {
            tx,
            path,
            disk_full,
        })
    }

    /// Turns true once a commit found the state directory's disk full (the journal then used
    /// its reserve): the run must stop what writes to that disk.
    pub fn disk_full(&self) -> tokio::sync::watch::Receiver<bool> {
        self.disk_full.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn queue(&self, write: Write, done: Option<Done>) {
        // A send error drops `done`, which reports the stopped writer.
        let _ = self.tx.send((write, done));
    }

    /// Queues a write and waits until it is committed.
    async fn write(
        &self,
        write: impl FnMut(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), StateError> {
        let (ack, done) = oneshot::channel();
        self.queue(
            Box::new(write),
            Some(Done(Some(Box::new(move |result| {
                let _ = ack.send(result);
            })))),
        );
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StateError::Closed(format!(
                "{}: {message}",
                self.path.display()
            ))),
            Err(_) => Err(StateError::Closed("writer thread ended".to_owned())),
        }
    }

    /// [`Journal::write`] of a transaction that answers something (a PR's number): the
    /// answer of the transaction that committed (a retried write answers again); `missing`
    /// names it in the error when no transaction answered.
    async fn write_answering<T: Send + 'static>(
        &self,
        missing: &'static str,
        mut write: impl FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let answered = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = std::sync::Arc::clone(&answered);
        self.write(move |t| {
            let answer = write(t)?;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
            Ok(())
        })
        .await?;
        let answer = answered.lock().unwrap_or_else(|p| p.into_inner()).take();
        answer.ok_or_else(|| StateError::Closed(missing.to_owned()))
    }

    /// Records a run, its units and its nodes (all `pending`) in one transaction, and waits
    /// for the commit. Its runner is this process: its pid and start time.
    pub async fn record_run(&self, run: NewRun) -> Result<(), StateError> {
        let pid = std::process::id();
        let runner_start = super::lock::process_start(pid).map(|s| s as i64);
        self.write(move |t| {
            t.execute(
                "INSERT INTO runs (id, spec_path, spec_name, plan, found_json, status, pid, started_at, runner_start, runtime) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9)",
                params![run.id, run.spec_path, run.spec_name, run.plan, run.found, pid, now(), runner_start, run.runtime.as_str()],
            )?;
            let mut unit_row = t.prepare("INSERT INTO units (run_id, id, job, org, repo, key, workspace, ord) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
            let mut node_row = t.prepare("INSERT INTO nodes (run_id, id, unit_id, kind, status, ord) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)")?;
            let mut ord = 0;
            for (u, unit) in run.units.iter().enumerate() {
                unit_row.execute(params![run.id, unit.id, unit.job, unit.org, unit.repo, unit.key, unit.workspace, u])?;
                for (node, kind) in &unit.nodes {
                    node_row.execute(params![run.id, node, unit.id, kind.as_str(), ord])?;
                    ord += 1;
                }
            }
            Ok(())
        })
        .await
    }

    /// Queues events of run `run` without waiting (the writer logs a failure); later writes
    /// commit after them. They are stamped with the time they are queued.
    pub fn record(&self, run: &str, events: Vec<RunEvent>) {
        let (run, at_ms) = (run.to_owned(), now_ms());
        self.queue(Box::new(move |t| apply_all(t, &run, &events, at_ms)), None);
    }

    /// Queues events like [`Self::record`] and calls `then` on the writer thread once their
    /// transaction ended, with the result of the commit. `then` must be quick and must not
    /// block (a channel send, say); it is called exactly once, with an error if the writer is
    /// gone.
    pub fn record_then(
        &self,
        run: &str,
        events: Vec<RunEvent>,
        then: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        let (run, at_ms) = (run.to_owned(), now_ms());
        self.queue(
            Box::new(move |t| apply_all(t, &run, &events, at_ms)),
            Some(Done(Some(Box::new(then)))),
        );
    }

    /// Records one event and waits until it is committed (a container's id, before the
    /// container starts; the end of a run).
    pub async fn record_now(&self, run: &str, event: RunEvent) -> Result<(), StateError> {
        let (run, at_ms) = (run.to_owned(), now_ms());
        self.write(move |t| apply_all(t, &run, std::slice::from_ref(&event), at_ms))
            .await
    }

    /// Records a pull request of the local forge: a new one, or the update of the one its
    /// branch already has (reopened). Returns its number and whether it was created.
    pub async fn upsert_pr(&self, pr: NewPr) -> Result<(i64, bool), StateError> {
        self.write_answering("no PR number", move |t| {
            let at = now();
            let existing: Option<i64> = t
                .query_row(
                    "SELECT number FROM prs WHERE org = ?1 AND repo = ?2 AND branch = ?3",
                    params![pr.org, pr.repo, pr.branch],
                    |row| row.get(0),
                )
                .ok();
            let answer = match existing {
                Some(number) => {
                    t.execute(
                        "UPDATE prs SET base = ?2, title = ?3, body = ?4, status = 'open', run_id = ?5, unit_id = ?6, updated_at = ?7 WHERE number = ?1",
                        params![number, pr.base, pr.title, pr.body, pr.run_id, pr.unit_id, at],
                    )?;
                    (number, false)
                }
                None => {
                    t.execute(
                        "INSERT INTO prs (org, repo, branch, base, title, body, status, run_id, unit_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8, ?9, ?9)",
                        params![pr.org, pr.repo, pr.branch, pr.base, pr.title, pr.body, pr.run_id, pr.unit_id, at],
                    )?;
                    (t.last_insert_rowid(), true)
                }
            };
            Ok(answer)
        })
        .await
    }

    /// Adds a comment to a pull request of the local forge, unless the same comment is there.
    pub async fn pr_comment(&self, number: i64, body: String) -> Result<(), StateError> {
        self.write(move |t| {
            t.execute(
                "INSERT INTO pr_comments (pr_number, body, at)
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS
                   (SELECT 1 FROM pr_comments WHERE pr_number = ?1 AND body = ?2)",
                params![number, body, now()],
            )
            .map(drop)
        })
        .await
    }

    /// Closes (`open` false) the open PR of `branch` in `org/repo` of the local forge, or
    /// reopens (`open` true) its closed one; the number of the PR changed, if any.
    pub async fn pr_set_open(
        &self,
        org: String,
        repo: String,
        branch: String,
        open: bool,
    ) -> Result<Option<i64>, StateError> {
        let (from, to) = if open {
            ("closed", "open")
        } else {
            ("open", "closed")
        };
        self.write_answering("no PR state", move |t| {
            let number: Option<i64> = t
                .query_row(
                    "SELECT number FROM prs WHERE org = ?1 AND repo = ?2 AND branch = ?3 AND status = ?4 ORDER BY number DESC LIMIT 1",
                    params![org, repo, branch, from],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(number) = number {
                t.execute(
                    "UPDATE prs SET status = ?2, updated_at = ?3 WHERE number = ?1",
                    params![number, to, now()],
                )?;
            }
            Ok(number)
        })
        .await
    }

    /// Closes pull request `number` of `branch` of the local forge with `comment` when it is
    /// open (in one transaction, so a resumed run finds it closed with its comment, or open
    /// without it); its status before (`open`, `closed`, `merged`), `None` when the local
    /// forge has no such PR of that branch.
    pub async fn pr_withdraw(
        &self,
        number: i64,
        branch: String,
        comment: String,
    ) -> Result<Option<String>, StateError> {
        self.write_answering("no PR state", move |t| {
            let status: Option<String> = t
                .query_row(
                    "SELECT status FROM prs WHERE number = ?1 AND branch = ?2",
                    params![number, branch],
                    |r| r.get(0),
                )
                .optional()?;
            if status.as_deref() == Some("open") {
                t.execute(
                    "INSERT INTO pr_comments (pr_number, body, at) VALUES (?1, ?2, ?3)",
                    params![number, comment, now()],
                )?;
                t.execute(
                    "UPDATE prs SET status = 'closed', updated_at = ?2 WHERE number = ?1",
                    params![number, now()],
                )?;
            }
            Ok(status)
        })
        .await
    }

    /// Marks a pull request of the local forge merged.
    pub async fn pr_merged(&self, number: i64) -> Result<(), StateError> {
        self.write(move |t| {
            t.execute(
                "UPDATE prs SET status = 'merged', updated_at = ?2 WHERE number = ?1",
                params![number, now()],
            )
            .map(drop)
        })
        .await
    }
}

/// Commits a batch in one transaction. A batch that fails because the disk is full is tried
/// once more after the state directory's reserve was given back, and `full` turns true so the
/// run stops what fills the disk: the end of a run is recorded even when a unit filled it.
fn commit(
    conn: &mut Connection,
    batch: &mut [(Write, Option<Done>)],
    state_dir: &Path,
    full: &tokio::sync::watch::Sender<bool>,
) -> Result<(), String> {
    match commit_once(conn, batch) {
        Err(error)
            if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
                && reserve::release(state_dir) =>
        {
            tracing::error!(
                "the disk holding {} is full: dispatch gave back the {} MiB it keeps there for \
                 the journal, which records the run's end in it; free some space before the \
                 next run",
                state_dir.display(),
                reserve::RESERVE_BYTES >> 20
            );
            full.send_replace(true);
            commit_once(conn, batch).map_err(|e| e.to_string())
        }
        result => result.map_err(|e| e.to_string()),
    }
}

/// Runs every write of a batch in one transaction and commits it (rolled back on an error).
fn commit_once(conn: &mut Connection, batch: &mut [(Write, Option<Done>)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (write, _) in batch.iter_mut() {
        write(&tx)?;
    }
    tx.commit()
}

/// The statements of events, in [`Statements`]' slots.
const SQL: [&str; 10] = [
    "UPDATE nodes SET status = 'running', attempts = ?3, started_at = ?4, finished_at = NULL, exit_code = NULL, outcome = NULL, reason = NULL WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET container_id = ?3 WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET status = ?3, outcome = ?4, exit_code = ?5, reason = ?6, finished_at = ?7 WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET status = 'pending' WHERE run_id = ?1 AND id = ?2",
    "INSERT INTO events (run_id, at_ms, node_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    "INSERT INTO starts (pool, model, at) VALUES (?1, ?2, ?3)",
    "UPDATE units SET pr = ?3, pr_origin = ?4 WHERE run_id = ?1 AND id = ?2",
    "UPDATE units SET outcome = ?3, reason = ?4, pr = ?5, held = ?6 WHERE run_id = ?1 AND id = ?2",
    "UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
    "INSERT INTO usage (run_id, node_id, attempt, session, model, turns, input_tokens, cached_tokens, output_tokens, cost_usd, cost_estimated, tools, result, final_message, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
];

/// Slots of [`SQL`].
const STARTED: usize = 0;
const CONTAINER: usize = 1;
const FINISHED: usize = 2;
const RESET: usize = 3;
const EVENT: usize = 4;
const START: usize = 5;
const PR: usize = 6;
const UNIT: usize = 7;
const RUN: usize = 8;
const USAGE: usize = 9;

/// The statements of one write, each prepared once for all its events (the dispatcher
/// records a batch of starts or ends at a time).
struct Statements<'c> {
    conn: &'c Connection,
    prepared: [Option<CachedStatement<'c>>; SQL.len()],
}

impl<'c> Statements<'c> {
    fn get(&mut self, slot: usize) -> rusqlite::Result<&mut CachedStatement<'c>> {
        match &mut self.prepared[slot] {
            Some(statement) => Ok(statement),
            empty => Ok(empty.insert(self.conn.prepare_cached(SQL[slot])?)),
        }
    }
}

fn apply_all(
    t: &Transaction<'_>,
    run: &str,
    events: &[RunEvent],
    at_ms: i64,
) -> rusqlite::Result<()> {
    let mut statements = Statements {
        conn: t,
        prepared: Default::default(),
    };
    for event in events {
        apply(&mut statements, run, event, at_ms)?;
    }
    Ok(())
}

/// Applies one event: the rows it changes, and a row of `events` for what happened to nodes
/// and to the run (a unit's end is its row).
fn apply(s: &mut Statements<'_>, run: &str, event: &RunEvent, at_ms: i64) -> rusqlite::Result<()> {
    let at = at_ms / 1000;
    let (node, kind, detail): (Option<&str>, &str, String) = match event {
        RunEvent::NodeStarted {
            node,
            attempt,
            pool,
        } => {
            if let Some(PoolStart { pool, model }) = pool {
                s.get(START)?.execute(params![pool, model, at])?;
            }
            s.get(STARTED)?.execute(params![run, node, attempt, at])?;
            (Some(node), "started", format!("attempt {attempt}"))
        }
        RunEvent::ContainerCreated { node, container } => {
            s.get(CONTAINER)?.execute(params![run, node, container])?;
            (Some(node), "container", container.clone())
        }
        RunEvent::NodeFinished {
            node,
            status,
            outcome,
            exit_code,
            reason,
        } => {
            s.get(FINISHED)?.execute(params![
                run,
                node,
                status.as_str(),
                outcome.map(|o| o.as_str()),
                exit_code,
                reason,
                at
            ])?;
            (
                Some(node),
                status.as_str(),
                reason.clone().unwrap_or_default(),
            )
        }
        RunEvent::NodeReset { node, cause } => {
            s.get(RESET)?.execute(params![run, node])?;
            (Some(node), "reset", cause.to_string())
        }
        RunEvent::CacheHit { node, key } => (Some(node), "cache", key.clone()),
        RunEvent::AgentReported {
            node,
            attempt,
            report: r,
        } => {
            let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            s.get(USAGE)?.execute(params![
                run,
                node,
                attempt,
                r.session,
                r.model,
                r.turns.map(tokens),
                tokens(r.tokens.input),
                tokens(r.tokens.cached),
                tokens(r.tokens.output),
                r.cost_usd,
                r.cost_estimated,
                tokens(r.tools),
                r.result,
                r.final_message,
                r.error,
                at
            ])?;
            return Ok(());
        }
        RunEvent::PrOpened { unit, pr, origin } => {
            s.get(PR)?
                .execute(params![run, unit, pr, origin.as_str()])?;
            return Ok(());
        }
        RunEvent::UnitFinished {
            unit,
            outcome,
            reason,
            pr,
            held,
        } => {
            s.get(UNIT)?.execute(params![
                run,
                unit,
                outcome.as_str(),
                reason,
                pr,
                held.map(|h| h.as_str())
            ])?;
            return Ok(());
        }
        RunEvent::BudgetReserved { unit, usd, tokens } => (
            None,
            "reserved",
            serde_json::json!({ "unit": unit, "usd": usd, "tokens": tokens }).to_string(),
        ),
        RunEvent::RolloutHalted { reason } => (None, "halted", reason.clone()),
        RunEvent::BudgetReleased { unit, usd, tokens } => (
            None,
            "released",
            serde_json::json!({ "unit": unit, "usd": usd, "tokens": tokens }).to_string(),
        ),
        RunEvent::Cancelling { reason } => (None, "cancel", reason.as_str().to_owned()),
        RunEvent::RunFinished { status } => {
            s.get(RUN)?.execute(params![run, status.as_str(), at])?;
            (None, "finished", status.as_str().to_owned())
        }
    };
    s.get(EVENT)?
        .execute(params![run, at_ms, node, kind, detail])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::event::NewUnit;
    use crate::state::Db;
    use crate::vocab::{NodeKind, NodeStatus, Outcome, PrOrigin, RunStatus};

    use crate::state::tests::temp;

    /// Queues events and waits for what their callback hears.
    fn hear(journal: &Journal, run: &str, events: Vec<RunEvent>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        journal.record_then(run, events, move |result| {
            let _ = tx.send(result);
        });
        rx.recv().expect("the callback is called")
    }

    fn one_unit_run() -> NewRun {
        NewRun {
            id: "r1".to_owned(),
            spec_path: "/s.yaml".to_owned(),
            spec_name: "s".to_owned(),
            plan: "sha256:00".to_owned(),
            found: None,
            runtime: Default::default(),
            units: vec![NewUnit {
                id: "j/o/r".to_owned(),
                job: "j".to_owned(),
                org: "o".to_owned(),
                repo: "r".to_owned(),
                key: "j".to_owned(),
                workspace: "workspaces/o/r/j".to_owned(),
                nodes: vec![
                    ("j/o/r:prep".to_owned(), NodeKind::Prep),
                    ("j/o/r:agent".to_owned(), NodeKind::Agent),
                ],
            }],
        }
    }

    #[tokio::test]
    async fn events_change_the_rows_that_status_reads() {
        let dir = temp("journal-events");
        let journal = Journal::start(&dir).expect("the journal starts");
        journal.record_run(one_unit_run()).await.expect("recorded");
        let agent = "j/o/r:agent".to_owned();
        journal.record(
            "r1",
            vec![RunEvent::NodeStarted {
                node: agent.clone(),
                attempt: 1,
                pool: Some(PoolStart {
                    pool: "codex".to_owned(),
                    model: None,
                }),
            }],
        );
        journal
            .record_now(
                "r1",
                RunEvent::ContainerCreated {
                    node: agent.clone(),
                    container: "c1".to_owned(),
                },
            )
            .await
            .expect("recorded");
        let ended = hear(
            &journal,
            "r1",
            vec![
                RunEvent::NodeFinished {
                    node: agent.clone(),
                    status: NodeStatus::Failed,
                    outcome: Some(Outcome::AgentFailed),
                    exit_code: Some(7),
                    reason: Some("agent exited with code 7".to_owned()),
                },
                RunEvent::UnitFinished {
                    unit: "j/o/r".to_owned(),
                    outcome: Outcome::AgentFailed,
                    reason: Some("agent exited with code 7".to_owned()),
                    pr: None,
                    held: None,
                },
                RunEvent::RunFinished {
                    status: RunStatus::Finished,
                },
            ],
        );
        assert_eq!(ended, Ok(()));

        let db = Db::open(&dir).expect("the database opens");
        let run = db.run(Some("r1")).expect("readable").expect("the run");
        assert_eq!(run.status, RunStatus::Finished);
        assert_eq!(run.outcomes.get("agent_failed"), Some(&1));
        let units = db.units("r1").expect("readable");
        assert_eq!(units[0].outcome, Some(Outcome::AgentFailed));
        let node = &units[0].nodes[1];
        assert_eq!(
            (node.status, node.outcome, node.exit_code, node.attempts),
            (NodeStatus::Failed, Some(Outcome::AgentFailed), Some(7), 1)
        );
        assert_eq!(node.container_id.as_deref(), Some("c1"));
        assert_eq!(db.starts_since("codex", None, 0).expect("readable"), 1);
        let kinds: Vec<String> = db
            .events("r1")
            .expect("readable")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["started", "container", "failed", "finished"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A PR of branch `agent/j` of `o/r` on the local forge, titled `title`.
    fn local_pr(title: &str) -> NewPr {
        NewPr {
            org: "o".to_owned(),
            repo: "r".to_owned(),
            branch: "agent/j".to_owned(),
            base: "main".to_owned(),
            title: title.to_owned(),
            body: "b".to_owned(),
            run_id: "r1".to_owned(),
            unit_id: "j/o/r".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_local_pr_is_created_once_per_branch_then_updated() {
        let dir = temp("journal-prs");
        let journal = Journal::start(&dir).expect("the journal starts");
        let pr = local_pr("fix: one");
        assert_eq!(
            journal.upsert_pr(pr.clone()).await.expect("recorded"),
            (1, true)
        );
        let again = NewPr {
            title: "fix: two".to_owned(),
            ..pr
        };
        assert_eq!(
            journal.upsert_pr(again).await.expect("recorded"),
            (1, false)
        );
        journal.pr_merged(1).await.expect("recorded");
        let prs = Db::open(&dir).and_then(|db| db.prs()).expect("readable");
        assert_eq!(prs.len(), 1);
        assert_eq!(
            (prs[0].title.as_str(), prs[0].status.as_str()),
            ("fix: two", "merged")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A run of `one_unit_run`'s unit with a publish node, as run `id`.
    fn publishing_run(id: &str) -> NewRun {
        let mut run = one_unit_run();
        run.id = id.to_owned();
        run.units[0]
            .nodes
            .push(("j/o/r:publish".to_owned(), NodeKind::Publish));
        run
    }

    /// The end of the unit's publish node with `outcome`.
    fn published(outcome: Outcome) -> RunEvent {
        RunEvent::NodeFinished {
            node: "j/o/r:publish".to_owned(),
            status: NodeStatus::Done,
            outcome: Some(outcome),
            exit_code: None,
            reason: None,
        }
    }

    #[tokio::test]
    async fn the_pr_a_unit_published_stays_open_until_a_later_publish_withdraws_it() {
        let dir = temp("journal-published");
        let journal = Journal::start(&dir).expect("the journal starts");
        let read = |run: Option<&str>| {
            Db::open(&dir)
                .and_then(|db| db.published_prs(run))
                .expect("readable")
                .remove("j/o/r")
        };
        journal.record_run(publishing_run("r1")).await.expect("r1");
        let opened = vec![
            published(Outcome::Changed),
            RunEvent::PrOpened {
                unit: "j/o/r".to_owned(),
                pr: "https://forge.example/o/r/pulls/3".to_owned(),
                origin: PrOrigin::Opened,
            },
        ];
        assert_eq!(hear(&journal, "r1", opened), Ok(()));
        let first = read(None).expect("r1 published a PR");
        assert_eq!(
            (first.run.as_str(), first.origin, first.open),
            ("r1", Some(PrOrigin::Opened), true)
        );
        assert_eq!(
            read(Some("r1")),
            None,
            "a run's own PR is not an earlier run's"
        );

        // A later run whose agent changed nothing withdrew it: nothing is left to close.
        journal.record_run(publishing_run("r2")).await.expect("r2");
        assert_eq!(
            hear(&journal, "r2", vec![published(Outcome::NoChanges)]),
            Ok(())
        );
        let later = read(None).expect("the PR is still the unit's latest");
        assert_eq!((later.run.as_str(), later.open), ("r1", false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_local_pr_is_withdrawn_once_with_its_comment() {
        let dir = temp("journal-withdraw");
        let journal = Journal::start(&dir).expect("the journal starts");
        let (number, _) = journal.upsert_pr(local_pr("fix")).await.expect("recorded");
        let withdraw = |branch: &str| {
            journal.pr_withdraw(
                number,
                branch.to_owned(),
                "closed: nothing to do".to_owned(),
            )
        };
        assert_eq!(withdraw("agent/other").await.expect("read"), None);
        assert_eq!(
            withdraw("agent/j").await.expect("closed").as_deref(),
            Some("open")
        );
        assert_eq!(
            withdraw("agent/j").await.expect("read").as_deref(),
            Some("closed")
        );
        let prs = Db::open(&dir).and_then(|db| db.prs()).expect("readable");
        assert_eq!(prs[0].status, "closed");
        assert_eq!(prs[0].comments.len(), 1, "{:?}", prs[0].comments);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_hears_whether_it_was_committed_or_why_not() {
        let dir = temp("journal-acks");
        let journal = Journal::start(&dir).expect("the journal starts");
        // Events of a run that was never recorded change no row: committed all the same.
        let unknown = hear(
            &journal,
            "nobody",
            vec![RunEvent::RunFinished {
                status: RunStatus::Finished,
            }],
        );
        assert_eq!(unknown, Ok(()));

        // A write that fails fails its batch, and the journal goes on.
        let (tx, rx) = mpsc::channel();
        journal.queue(
            Box::new(|t| t.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)),
            Some(Done(Some(Box::new(move |result| {
                let _ = tx.send(result);
            })))),
        );
        let failed = rx.recv().expect("the callback is called");
        assert!(failed.expect_err("no such table").contains("nowhere"));
        assert_eq!(
            hear(&journal, "r", Vec::new()),
            Ok(()),
            "the journal goes on"
        );

        // A write that brings the writer down (a bug) still answers, and so does every later
        // one: nobody waits forever.
        journal.queue(Box::new(|_| panic!("a broken write")), None);
        let after = hear(&journal, "r", Vec::new());
        assert_eq!(after, Err("the journal writer stopped".to_owned()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
