//! [`Db`]: a connection of its own to a state directory's database, for the commands that read
//! it (`runs`, `status`, `logs`, `prs`, `resume`, the daily-limit counts of a new run) and for
//! the few changes they make outside a running runner:
//! - [`Db::reopen`]: `retry` and `answer` set units back to `pending` from a node kind on;
//! - [`Db::cancel_orphans`]: `cancel` of a run whose runner is gone marks what never ended;
//! - [`Db::set_runner`]: `resume` records the process that now owns a run.
//!
//! Each change is one transaction. Errors name the database file (through [`StateError`]).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::{connect, now, StateError, DB_FILE};
use crate::vocab::NodeKind;

/// A read (and maintenance) connection to a state directory's database.
pub struct Db {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating and migrating when needed) the database of a state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Ok(Self {
            conn: connect(dir)?,
            path: dir.join(DB_FILE),
        })
    }

    /// Opens an existing database read-only, neither creating nor migrating it: for a reader
    /// that watches a run its runner may still be setting up.
    pub fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| StateError::Sqlite {
            path: path.clone(),
            error,
        })?;
        Ok(Self { conn, path })
    }

    /// Whether a state directory holds a database (commands that only read say so when not).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(DB_FILE).exists()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A SQLite error, naming the file.
    pub(super) fn fail(&self, error: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .map(|v| v.parse().unwrap_or(0))
            .map_err(|e| self.fail(e))
    }

    /// What run `run` recorded for `dispatch resume`: its plan's fingerprint (or, from older
    /// versions, its whole plan as JSON) and what the forge answered for its targets (JSON).
    /// `(None, None)` when there is no such run.
    pub fn recorded(&self, run: &str) -> Result<(Option<String>, Option<String>), StateError> {
        self.conn
            .query_row(
                "SELECT plan, found_json FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.fail(e))
    }

    /// Records that process `pid`, started at `start` (`/proc/PID/stat` field 22), now runs
    /// run `run` (a resume took it over).
    pub fn set_runner(&self, run: &str, pid: u32, start: Option<u64>) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET pid = ?2, runner_start = ?3 WHERE id = ?1",
                params![run, pid, start.map(|s| s as i64)],
            )
            .map(drop)
            .map_err(|e| self.fail(e))
    }

    /// Sets `units` of run `run` back to `pending` from node kind `from` on (their earlier
    /// nodes keep their state), clears their outcomes and reopens the run: what `retry` and
    /// `answer` do before resuming it.
    pub fn reopen(&self, run: &str, units: &[String], from: NodeKind) -> Result<(), StateError> {
        let reopened = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut node = tx.prepare(
                    "UPDATE nodes SET status = 'pending', attempts = 0, container_id = NULL, exit_code = NULL, outcome = NULL, reason = NULL WHERE run_id = ?1 AND unit_id = ?2 AND kind = ?3",
                )?;
                let mut unit = tx.prepare(
                    "UPDATE units SET outcome = NULL, reason = NULL, held = NULL WHERE run_id = ?1 AND id = ?2",
                )?;
                for id in units {
                    for kind in NodeKind::ALL.iter().filter(|k| **k >= from) {
                        node.execute(params![run, id, kind.as_str()])?;
                    }
                    unit.execute(params![run, id])?;
                }
            }
            tx.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?1",
                [run],
            )?;
            tx.commit()
        })();
        reopened.map_err(|e| self.fail(e))
    }

    /// Ends what a run whose runner is gone left unfinished: its nodes that never ended and
    /// its units without an outcome are `cancelled` with `reason`, and so is the run.
    pub fn cancel_orphans(&self, run: &str, reason: &str) -> Result<(), StateError> {
        let cancelled = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute(
                "UPDATE nodes SET status = 'cancelled', reason = ?2 WHERE run_id = ?1 AND status IN ('pending', 'ready', 'running')",
                params![run, reason],
            )?;
            tx.execute(
                "UPDATE units SET outcome = 'cancelled', reason = ?2 WHERE run_id = ?1 AND outcome IS NULL",
                params![run, reason],
            )?;
            tx.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?2 WHERE id = ?1",
                params![run, now()],
            )?;
            tx.commit()
        })();
        cancelled.map_err(|e| self.fail(e))
    }
}
