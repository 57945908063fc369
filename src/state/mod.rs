//! The run journal: one SQLite database (WAL) per state directory.
//!
//! Tables: `runs`, `units`, `nodes` (status, attempts, timestamps, container id, exit code,
//! outcome, reason), `events`, `starts` (agent starts, for daily limits across runs) and `prs`
//! (the local forge's pull requests). Schema versions are recorded in `meta` and migrations
//! are applied in order; a database from a newer dispatch is refused with a clear message.
//!
//! Writes go through [`Journal`]: one thread owns the write connection and commits every
//! batch of queued writes in one transaction before acknowledging them (group commit), so a
//! transition is durable before anything depends on it while thousands of transitions per
//! second stay cheap. Readers (`status`, `prs`) open their own connection; WAL lets them read
//! while a run writes.

pub mod views;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

/// Schema version this dispatch writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "dispatch.db";

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    spec_path TEXT NOT NULL,
    spec_name TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE units (
    run_id TEXT NOT NULL,
    id TEXT NOT NULL,
    job TEXT NOT NULL,
    org TEXT NOT NULL,
    repo TEXT NOT NULL,
    key TEXT NOT NULL,
    workspace TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    pr TEXT,
    ord INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE TABLE nodes (
    run_id TEXT NOT NULL,
    id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    finished_at INTEGER,
    container_id TEXT,
    exit_code INTEGER,
    reason TEXT,
    ord INTEGER NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    node_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE starts (
    pool TEXT NOT NULL,
    model TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX starts_by_pool ON starts (pool, at);
CREATE TABLE prs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    org TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    base TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (org, repo, branch)
);
"#,
    // What the forge answered for the spec's `select` entries (JSON), so a resume plans the same
    // units.
    r#"
ALTER TABLE runs ADD COLUMN found_json TEXT;
"#,
    // A run records its plan's fingerprint (`sha256:...`, `plan::fingerprint`), not the whole
    // plan (13 MB of JSON for 20,000 units); runs of earlier versions keep their JSON here.
    r#"
ALTER TABLE runs RENAME COLUMN plan_json TO plan;
"#,
];

/// Errors of the state directory, each naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state database {path}: {error}{}", hint(error))]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        error: rusqlite::Error,
    },
    /// The database was written by a newer dispatch.
    #[error("state database {path} has schema version {found}, newer than this dispatch understands ({SCHEMA_VERSION}); upgrade dispatch or use another --state-dir")]
    Newer {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// The directory could not be created.
    #[error("cannot create state directory {path}: {error}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The journal thread is gone (it failed earlier).
    #[error("the journal writer stopped: {0}")]
    Closed(String),
}

/// What to do about a SQLite error, for the message.
fn hint(error: &rusqlite::Error) -> &'static str {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "; another dispatch process holds it: wait for it, or stop it with `dispatch cancel`"
        }
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            "; the file is damaged: move it aside (its runs are lost to dispatch, the workspaces stay) or use another --state-dir"
        }
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::CannotOpen) => {
            "; check that this user may write the state directory"
        }
        Some(rusqlite::ErrorCode::DiskFull) => "; the disk is full",
        _ => "",
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch (event times).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Opens (creating and migrating when needed) the database of a state directory.
pub fn open(dir: &Path) -> Result<Connection, StateError> {
    std::fs::create_dir_all(dir).map_err(|error| StateError::Io {
        path: dir.to_owned(),
        error,
    })?;
    let path = dir.join(DB_FILE);
    let fail = |error| StateError::Sqlite {
        path: path.clone(),
        error,
    };
    let conn = Connection::open(&path).map_err(fail)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(fail)?;

    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        [],
    )
    .map_err(fail)?;
    let version: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(fail)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StateError::Newer {
            path,
            found: version,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = i as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {migration} INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{next}'); COMMIT;"
        ))
        .map_err(fail)?;
    }
    Ok(conn)
}

type Write = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send>;

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
}

impl Journal {
    /// Starts the writer thread on the state directory's database.
    pub fn start(dir: &Path) -> Result<Self, StateError> {
        let mut conn = open(dir)?;
        let path = dir.join(DB_FILE);
        let (tx, rx) = mpsc::channel::<(Write, Option<Done>)>();
        std::thread::Builder::new()
            .name("dispatch-journal".to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = commit(&mut conn, &mut batch);
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
        Ok(Self { tx, path })
    }

    fn queue(&self, write: Write, done: Option<Done>) {
        // A send error drops `done`, which reports the stopped writer.
        let _ = self.tx.send((write, done));
    }

    /// Queues a write now (writes commit in the order they are queued); the receiver tells
    /// when it is committed.
    pub fn enqueue(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (ack, done) = oneshot::channel();
        self.enqueue_then(write, move |result| {
            let _ = ack.send(result);
        });
        done
    }

    /// Queues a write now and calls `then` on the writer thread once its transaction ended,
    /// with the result of the commit (`then` must be quick and must not block: a channel
    /// send, say). `then` is called exactly once, with an error if the writer is gone.
    pub fn enqueue_then(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
        then: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        self.queue(Box::new(write), Some(Done(Some(Box::new(then)))));
    }

    /// Queues a write now without waiting for it (the writer logs a failure). Later writes
    /// commit after it.
    pub fn submit(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) {
        self.queue(Box::new(write), None);
    }

    /// Queues a write and waits until it is committed.
    pub async fn write(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), StateError> {
        match self.enqueue(write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StateError::Closed(format!(
                "{}: {message}",
                self.path.display()
            ))),
            Err(_) => Err(StateError::Closed("writer thread ended".to_owned())),
        }
    }

    /// Writes one node transition (and its event) and waits for the commit.
    pub async fn node(&self, run: &str, node: &str, change: NodeChange) -> Result<(), StateError> {
        let (run, node) = (run.to_owned(), node.to_owned());
        self.write(move |tx| change.apply_to(tx, &run, &node)).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn commit(conn: &mut Connection, batch: &mut [(Write, Option<Done>)]) -> Result<(), String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    for (write, _) in batch.iter_mut() {
        let write = std::mem::replace(write, Box::new(|_| Ok(())));
        write(&tx).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

/// A change of one node's row, recorded with an event.
#[derive(Clone, Debug)]
pub enum NodeChange {
    /// The node started (attempt number).
    Started {
        /// Attempt, 1-based.
        attempt: u32,
    },
    /// A container was created for the node (recorded before it starts).
    Container {
        /// Container id.
        id: String,
    },
    /// The node finished in a terminal status.
    Finished {
        /// `done`, `failed`, `skipped` or `cancelled`.
        status: &'static str,
        /// Exit code of its container, if any.
        exit_code: Option<i64>,
        /// Why, for anything but `done`.
        reason: Option<String>,
    },
    /// Back to pending (a fix attempt re-runs it).
    Reset,
}

impl NodeChange {
    /// Applies the change inside a transaction.
    pub fn apply_to(self, tx: &Transaction<'_>, run: &str, node: &str) -> rusqlite::Result<()> {
        self.apply_at(tx, run, node, now_ms())
    }

    /// Applies the change, recording it as having happened at `at_ms` (milliseconds since the
    /// epoch), for writes queued some time after the fact.
    pub fn apply_at(
        self,
        tx: &Transaction<'_>,
        run: &str,
        node: &str,
        at_ms: i64,
    ) -> rusqlite::Result<()> {
        NodeWriter::new(tx).apply(run, node, &self, at_ms)
    }
}

/// The statements of node changes, in [`NodeWriter`]'s slots.
const NODE_SQL: [&str; 5] = [
    "UPDATE nodes SET status = 'running', attempts = ?3, started_at = ?4, finished_at = NULL, exit_code = NULL, reason = NULL WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET container_id = ?3 WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET status = ?3, exit_code = ?4, reason = ?5, finished_at = ?6 WHERE run_id = ?1 AND id = ?2",
    "UPDATE nodes SET status = 'pending' WHERE run_id = ?1 AND id = ?2",
    "INSERT INTO events (run_id, at_ms, node_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
];

/// Slots of [`NODE_SQL`].
const STARTED: usize = 0;
const CONTAINER: usize = 1;
const FINISHED: usize = 2;
const RESET: usize = 3;
const EVENT: usize = 4;

/// Writes node changes, each with its event, preparing each statement once for all the
/// changes of one journal write (the dispatcher writes a batch of starts or ends at a time).
pub struct NodeWriter<'c> {
    conn: &'c Connection,
    statements: [Option<CachedStatement<'c>>; NODE_SQL.len()],
}

impl<'c> NodeWriter<'c> {
    /// A writer inside a transaction on `conn`.
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            statements: Default::default(),
        }
    }

    fn statement(&mut self, slot: usize) -> rusqlite::Result<&mut CachedStatement<'c>> {
        match &mut self.statements[slot] {
            Some(statement) => Ok(statement),
            empty => Ok(empty.insert(self.conn.prepare_cached(NODE_SQL[slot])?)),
        }
    }

    /// Applies one change of `node` that happened at `at_ms` (milliseconds since the epoch).
    pub fn apply(
        &mut self,
        run: &str,
        node: &str,
        change: &NodeChange,
        at_ms: i64,
    ) -> rusqlite::Result<()> {
        let at = at_ms / 1000;
        let (kind, detail) = match change {
            NodeChange::Started { attempt } => {
                self.statement(STARTED)?
                    .execute(params![run, node, attempt, at])?;
                ("started", format!("attempt {attempt}"))
            }
            NodeChange::Container { id } => {
                self.statement(CONTAINER)?.execute(params![run, node, id])?;
                ("container", id.clone())
            }
            NodeChange::Finished {
                status,
                exit_code,
                reason,
            } => {
                self.statement(FINISHED)?
                    .execute(params![run, node, status, exit_code, reason, at])?;
                (*status, reason.clone().unwrap_or_default())
            }
            NodeChange::Reset => {
                self.statement(RESET)?.execute(params![run, node])?;
                ("reset", String::new())
            }
        };
        self.statement(EVENT)?
            .execute(params![run, at_ms, node, kind, detail])?;
        Ok(())
    }
}

/// Starts of an agent pool (or `pool:model`) since `since` (seconds since the epoch).
pub fn starts_since(
    conn: &Connection,
    pool: &str,
    model: Option<&str>,
    since: i64,
) -> rusqlite::Result<u32> {
    match model {
        Some(model) => conn.query_row(
            "SELECT COUNT(*) FROM starts WHERE pool = ?1 AND model = ?2 AND at >= ?3",
            params![pool, model, since],
            |r| r.get(0),
        ),
        None => conn.query_row(
            "SELECT COUNT(*) FROM starts WHERE pool = ?1 AND at >= ?2",
            params![pool, since],
            |r| r.get(0),
        ),
    }
}

/// A pull request of the local forge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PrRow {
    /// PR number (unique in the state directory).
    pub number: i64,
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
    /// `open`, `merged` or `closed`.
    pub status: String,
    /// Run that last wrote it.
    pub run_id: String,
    /// Unit that owns it.
    pub unit_id: String,
}

/// Every PR of the local forge, newest first.
pub fn prs(conn: &Connection) -> rusqlite::Result<Vec<PrRow>> {
    let mut statement = conn.prepare(
        "SELECT number, org, repo, branch, base, title, body, status, run_id, unit_id FROM prs ORDER BY number DESC",
    )?;
    let rows = statement.query_map([], |r| {
        Ok(PrRow {
            number: r.get(0)?,
            org: r.get(1)?,
            repo: r.get(2)?,
            branch: r.get(3)?,
            base: r.get(4)?,
            title: r.get(5)?,
            body: r.get(6)?,
            status: r.get(7)?,
            run_id: r.get(8)?,
            unit_id: r.get(9)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues a write and waits for what its callback hears (a callback dropped unrun would
    /// end the wait with a panic here).
    fn outcome(
        journal: &Journal,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        journal.enqueue_then(write, move |result| {
            let _ = tx.send(result);
        });
        rx.recv().expect("the callback is called")
    }

    #[test]
    fn a_database_of_an_earlier_version_is_migrated_and_keeps_its_runs() {
        let dir = std::env::temp_dir().join(format!("dispatch-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the directory is created");
        // What a dispatch of schema version 2 left: a run that recorded its whole plan.
        let old = Connection::open(dir.join(DB_FILE)).expect("the database is created");
        old.execute_batch(&format!(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); {} {} \
             INSERT INTO meta VALUES ('schema_version', '2'); \
             INSERT INTO runs (id, spec_path, spec_name, plan_json, status, pid, started_at) \
             VALUES ('r1', 's.yaml', 's', '{{\"units\": []}}', 'running', 1, 0);",
            MIGRATIONS[0], MIGRATIONS[1]
        ))
        .expect("the version 2 schema is created");
        drop(old);

        let conn = open(&dir).expect("the database is migrated");
        let version: String = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .expect("the version is recorded");
        assert_eq!(version, SCHEMA_VERSION.to_string());
        let plan: String = conn
            .query_row("SELECT plan FROM runs WHERE id = 'r1'", [], |r| r.get(0))
            .expect("the run is still there");
        assert_eq!(plan, r#"{"units": []}"#, "the plan it recorded, for resume");
        drop(conn);
        assert!(open(&dir).is_ok(), "a migrated database opens again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_hears_whether_it_was_committed_or_why_not() {
        let dir = std::env::temp_dir().join(format!("dispatch-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::start(&dir).expect("the journal starts");

        let failed = outcome(&journal, |t| {
            t.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
        });
        assert!(failed.expect_err("no such table").contains("nowhere"));
        let committed = outcome(&journal, |t| {
            t.execute("INSERT INTO starts (pool, at) VALUES ('p', 1)", [])
                .map(drop)
        });
        assert_eq!(
            committed,
            Ok(()),
            "the journal goes on after a failed batch"
        );
        let conn = open(&dir).expect("the database opens");
        assert_eq!(starts_since(&conn, "p", None, 0), Ok(1));

        // A write that brings the writer down (a bug) still answers, and so does every later
        // one: nobody waits forever.
        let gone = outcome(&journal, |_| panic!("a broken write"));
        assert_eq!(gone, Err("the journal writer stopped".to_owned()));
        let after = outcome(&journal, |_| Ok(()));
        assert_eq!(after, Err("the journal writer stopped".to_owned()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
