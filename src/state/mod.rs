//! The run journal: one SQLite database (WAL) per state directory, and the only place in
//! dispatch that holds SQL.
//!
//! Tables: `runs`, `units`, `nodes` (status, attempts, timestamps, container id, exit code,
//! outcome, reason), `events`, `starts` (agent starts, for daily limits across runs), `usage`
//! (what each agent run reported: session, tokens, cost, final message, error) and `prs` (the
//! local forge's pull requests); a unit's row keeps its PR and whose it is (`pr_origin`). Schema versions are recorded in `meta` and migrations
//! are applied in order; a database from a newer dispatch is refused with a clear message.
//!
//! - [`Journal`] ([`journal`]) is the one writer of a run: it takes typed [`RunEvent`]s
//!   ([`event`]), the same values the reporter shows, and commits every batch of queued
//!   writes in one transaction before acknowledging them (group commit), so a transition is
//!   durable before anything depends on it while thousands of transitions per second stay
//!   cheap. Writes commit in the order they were queued.
//! - [`Db`] ([`db`]) is a connection of its own for the commands that read a state directory
//!   (`runs`, `status`, `logs`, `prs`, `resume`) and for the few changes they make outside a
//!   run (reopening units for `retry` and `answer`, cancelling a dead runner's units); WAL
//!   lets them read while a run writes. Its views ([`views`]) return typed statuses,
//!   outcomes and node kinds.
//!
//! - [`lock`]: the spec lock a runner holds for its whole life and the workspace lock of a
//!   unit, files under `<state>/locks/` that the kernel releases when their holder dies.
//!
//! No SQL text is built at run time: every statement is a constant with parameters.

pub mod db;
pub mod event;
pub mod journal;
pub mod lock;
pub mod reserve;
pub mod slots;
pub mod views;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

pub use db::Db;
pub use event::{NewRun, NewUnit, RunEvent};
pub use journal::Journal;

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
    // A node's outcome is a column of its own. Earlier versions wrote it in front of the
    // reason of a failed node (`agent_failed: agent exited with code 7`): split it off.
    r#"
ALTER TABLE nodes ADD COLUMN outcome TEXT;
UPDATE nodes SET
    outcome = substr(reason, 1, instr(reason, ': ') - 1),
    reason = substr(reason, instr(reason, ': ') + 2)
WHERE status = 'failed'
  AND instr(reason, ': ') > 1
  AND substr(reason, 1, instr(reason, ': ') - 1) IN
      ('blocked', 'agent_failed', 'qa_failed', 'timed_out', 'infra_error', 'needs_review');
"#,
    // The start time of the runner's process (`/proc/PID/stat` field 22), so that a pid the
    // kernel handed out again is never taken for the runner.
    r#"
ALTER TABLE runs ADD COLUMN runner_start INTEGER;
"#,
    // What each agent run reported (its CLI's JSON events): session, tokens, cost, the final
    // message and the CLI's error; one row per agent container.
    r#"
CREATE TABLE usage (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    session TEXT,
    model TEXT,
    turns INTEGER,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL,
    cost_estimated INTEGER NOT NULL,
    tools INTEGER NOT NULL,
    result INTEGER NOT NULL,
    final_message TEXT,
    error TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX usage_by_node ON usage (run_id, node_id);
"#,
    // Comments on the local forge's pull requests (a review agent's review).
    r#"
CREATE TABLE pr_comments (
    seq INTEGER PRIMARY KEY,
    pr_number INTEGER NOT NULL REFERENCES prs (number),
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX pr_comments_by_pr ON pr_comments (pr_number);
"#,
    // What held a skipped unit back (`budget`, `rollout`, `open_prs`): `dispatch resume`
    // starts it again once that allows.
    r#"
ALTER TABLE units ADD COLUMN held TEXT;
"#,
    // Whose a unit's PR is (`opened` by dispatch, or `adopted`: open for its branch already),
    // so that only what dispatch opened is closed on a later run that changes nothing. PRs of
    // the local forge are all dispatch's; the remote ones of earlier versions stay unknown.
    r#"
ALTER TABLE units ADD COLUMN pr_origin TEXT;
UPDATE units SET pr_origin = 'opened' WHERE pr LIKE 'local:%';
"#,
    // Where the run's containers run (`docker`, `kubernetes`): a resume of it runs them
    // there too, whatever the command line says then.
    r#"
ALTER TABLE runs ADD COLUMN runtime TEXT NOT NULL DEFAULT 'docker';
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
    /// The disk cannot keep the journal's reserve ([`reserve`]).
    #[error(
        "the disk holding the state directory {path} cannot keep the {} MiB that dispatch keeps \
         there so the journal can always record how a run ends ({error}); free some space first",
        reserve::RESERVE_BYTES >> 20
    )]
    NoReserve {
        /// The state directory.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The journal thread is gone (it failed earlier).
    #[error("the journal writer stopped: {0}")]
    Closed(String),
    /// A value in the database is not one this dispatch writes (a damaged or hand-edited file).
    #[error("state database {path}: {error}")]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What was found.
        error: crate::vocab::UnknownWord,
    },
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

/// A moment in UTC, from seconds since the epoch; shown as `2026-11-27 01:17:42 UTC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: i64,
    /// Day of the month, from 1.
    pub day: i64,
    /// Hour, 0 to 23.
    pub hour: i64,
    /// Minute.
    pub minute: i64,
    /// Second.
    pub second: i64,
}

impl Civil {
    /// The moment `secs` seconds after the epoch.
    pub fn of(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Self {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }
}

impl std::fmt::Display for Civil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Milliseconds since the Unix epoch (event times).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Opens (creating and migrating when needed) the database of a state directory.
/// Creates the state directory (and its parents) unless it exists.
fn create_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|error| StateError::Io {
        path: dir.to_owned(),
        error,
    })
}

fn connect(dir: &Path) -> Result<Connection, StateError> {
    create_dir(dir)?;
    let path = dir.join(DB_FILE);
    let fail = |error| StateError::Sqlite {
        path: path.clone(),
        error,
    };
    let mut conn = Connection::open(&path).map_err(fail)?;
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
    // One migration per transaction; the version is read inside it, so two processes opening
    // a new database at once (a runner and a `status`) never apply the same migration twice.
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let version: i64 = tx
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
        let Some(migration) = MIGRATIONS.get(version as usize) else {
            break;
        };
        tx.execute_batch(migration).map_err(fail)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
            [(version + 1).to_string()],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(conn)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory for test `name` of this process (removed if it was left).
    pub(crate) fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dispatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_moment_is_shown_in_utc() {
        assert_eq!(Civil::of(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            Civil::of(1_795_742_262).to_string(),
            "2026-11-27 01:17:42 UTC"
        );
    }

    #[test]
    fn a_database_of_an_earlier_version_is_migrated_and_keeps_its_runs() {
        let dir = std::env::temp_dir().join(format!("dispatch-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the directory is created");
        // What a dispatch of schema version 2 left: a run that recorded its whole plan, and a
        // failed node with its outcome in front of its reason.
        let old = Connection::open(dir.join(DB_FILE)).expect("the database is created");
        old.execute_batch(
            &[
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
                MIGRATIONS[0],
                MIGRATIONS[1],
                "INSERT INTO meta VALUES ('schema_version', '2');
             INSERT INTO runs (id, spec_path, spec_name, plan_json, status, pid, started_at)
             VALUES ('r1', 's.yaml', 's', '{\"units\": []}', 'running', 1, 0);
             INSERT INTO units (run_id, id, job, org, repo, key, workspace, ord)
             VALUES ('r1', 'j/o/r', 'j', 'o', 'r', 'j', 'workspaces/o/r/j', 0);
             INSERT INTO nodes (run_id, id, unit_id, kind, status, reason, ord) VALUES
             ('r1', 'j/o/r:agent', 'j/o/r', 'agent', 'failed', 'agent_failed: exited: 7', 0),
             ('r1', 'j/o/r:qa', 'j/o/r', 'qa', 'skipped', 'agent ended agent_failed', 1);",
            ]
            .concat(),
        )
        .expect("the version 2 schema is created");
        drop(old);

        let db = Db::open(&dir).expect("the database is migrated");
        assert_eq!(db.schema_version().expect("readable"), SCHEMA_VERSION);
        let (plan, _) = db.recorded("r1").expect("the run is still there");
        assert_eq!(
            plan.as_deref(),
            Some(r#"{"units": []}"#),
            "the plan it recorded"
        );
        let units = db.units("r1").expect("the units are readable");
        let agent = &units[0].nodes[0];
        assert_eq!(agent.outcome, Some(crate::vocab::Outcome::AgentFailed));
        assert_eq!(agent.reason.as_deref(), Some("exited: 7"));
        let qa = &units[0].nodes[1];
        assert_eq!(
            (qa.outcome, qa.reason.as_deref()),
            (None, Some("agent ended agent_failed"))
        );
        drop(db);
        assert!(Db::open(&dir).is_ok(), "a migrated database opens again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
