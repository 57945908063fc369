//! What `runs`, `status`, `logs` and `cancel` read: plain queries on a read connection, safe
//! while a run writes (WAL).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// One run, with its counts per outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Spec file as given.
    pub spec_path: String,
    /// Spec name.
    pub spec_name: String,
    /// `running`, `finished` or `cancelled`.
    pub status: String,
    /// Process id of the runner.
    pub pid: i64,
    /// Start, seconds since the epoch.
    pub started_at: i64,
    /// End, if it ended.
    pub finished_at: Option<i64>,
    /// Units.
    pub units: i64,
    /// Units per outcome (`running` for units without one yet).
    pub outcomes: std::collections::BTreeMap<String, i64>,
}

/// A unit with its nodes.
#[derive(Clone, Debug, Serialize)]
pub struct UnitRow {
    /// Unit id.
    pub id: String,
    /// Workspace, relative to the state directory.
    pub workspace: String,
    /// Outcome, when ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// PR reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<String>,
    /// Nodes in order.
    pub nodes: Vec<NodeRow>,
}

/// A node's row.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Attempts.
    pub attempts: i64,
    /// Container id, if one was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// End, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Whether its result came from the agent-output cache (in its latest attempt).
    pub cached: bool,
}

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: row.get(0)?,
        spec_path: row.get(1)?,
        spec_name: row.get(2)?,
        status: row.get(3)?,
        pid: row.get(4)?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        units: 0,
        outcomes: Default::default(),
    })
}

const RUN_COLUMNS: &str = "id, spec_path, spec_name, status, pid, started_at, finished_at";

fn with_counts(conn: &Connection, mut run: RunRow) -> rusqlite::Result<RunRow> {
    let mut statement = conn.prepare_cached(
        "SELECT COALESCE(outcome, 'running'), COUNT(*) FROM units WHERE run_id = ?1 GROUP BY 1",
    )?;
    let rows = statement.query_map([&run.id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (outcome, count) = row?;
        run.units += count;
        run.outcomes.insert(outcome, count);
    }
    Ok(run)
}

/// The most recent runs, newest first.
pub fn runs(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<RunRow>> {
    let mut statement = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1"
    ))?;
    let rows: Vec<RunRow> = statement
        .query_map([limit as i64], run_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(|r| with_counts(conn, r)).collect()
}

/// One run by id, or the newest when `id` is `None`.
pub fn run(conn: &Connection, id: Option<&str>) -> rusqlite::Result<Option<RunRow>> {
    let row = match id {
        Some(id) => conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()?,
        None => conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
                ),
                [],
                run_row,
            )
            .optional()?,
    };
    row.map(|r| with_counts(conn, r)).transpose()
}

/// Every unit of a run with its nodes, in plan order.
pub fn units(conn: &Connection, run: &str) -> rusqlite::Result<Vec<UnitRow>> {
    let mut statement = conn.prepare(
        "SELECT id, workspace, outcome, reason, pr FROM units WHERE run_id = ?1 ORDER BY ord",
    )?;
    let mut units: Vec<UnitRow> = statement
        .query_map([run], |r| {
            Ok(UnitRow {
                id: r.get(0)?,
                workspace: r.get(1)?,
                outcome: r.get(2)?,
                reason: r.get(3)?,
                pr: r.get(4)?,
                nodes: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let index: std::collections::HashMap<String, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.clone(), i))
        .collect();
    let mut statement = conn.prepare(
        "SELECT n.unit_id, n.id, n.kind, n.status, n.attempts, n.container_id, n.exit_code, n.reason, n.started_at, n.finished_at, \
         EXISTS (SELECT 1 FROM events e WHERE e.run_id = n.run_id AND e.node_id = n.id AND e.kind = 'cache' \
                 AND e.seq > COALESCE((SELECT MAX(s.seq) FROM events s WHERE s.run_id = n.run_id AND s.node_id = n.id AND s.kind = 'started'), 0)) \
         FROM nodes n WHERE n.run_id = ?1 ORDER BY n.ord",
    )?;
    let rows = statement.query_map([run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            NodeRow {
                id: r.get(1)?,
                kind: r.get(2)?,
                status: r.get(3)?,
                attempts: r.get(4)?,
                container_id: r.get(5)?,
                exit_code: r.get(6)?,
                reason: r.get(7)?,
                started_at: r.get(8)?,
                finished_at: r.get(9)?,
                cached: r.get(10)?,
            },
        ))
    })?;
    for row in rows {
        let (unit, node) = row?;
        if let Some(&i) = index.get(&unit) {
            units[i].nodes.push(node);
        }
    }
    Ok(units)
}

/// The unit workspace and status of a node.
pub fn node(
    conn: &Connection,
    run: &str,
    node: &str,
) -> rusqlite::Result<Option<(String, String, String)>> {
    conn.query_row(
        "SELECT u.workspace, n.kind, n.status FROM nodes n JOIN units u ON u.run_id = n.run_id AND u.id = n.unit_id WHERE n.run_id = ?1 AND n.id = ?2",
        params![run, node],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// One event of a run's journal, in the order it was recorded.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// The node it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened: `started`, `container`, `done`, `failed`, `skipped`, `cancelled`,
    /// `reset`, `cache`.
    pub kind: String,
    /// Details (the attempt, the container id, the reason, the cache key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every event of a run, oldest first.
pub fn events(conn: &Connection, run: &str) -> rusqlite::Result<Vec<EventRow>> {
    let mut statement = conn.prepare(
        "SELECT at_ms, node_id, kind, detail FROM events WHERE run_id = ?1 ORDER BY seq",
    )?;
    let rows = statement.query_map([run], |r| {
        Ok(EventRow {
            at_ms: r.get(0)?,
            node: r.get(1)?,
            kind: r.get(2)?,
            detail: r.get(3)?,
        })
    })?;
    rows.collect()
}
