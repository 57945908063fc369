//! What `runs`, `status`, `logs`, `prs`, `resume` and the limits read: plain queries on a
//! [`Db`], safe while a run writes (WAL). Rows carry typed statuses, outcomes and node kinds;
//! a value this dispatch does not write is an error naming the file, never a guess.

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::FromSql;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Db, StateError};
use crate::agents::output::{next_session, Report, Tokens, Usage};
use crate::vocab::{Hold, NodeKind, NodeStatus, Outcome, PrOrigin, RunStatus, UnknownWord};

/// One run, with its counts per outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Spec file as given.
    pub spec_path: String,
    /// Spec name.
    pub spec_name: String,
    /// Where the run is.
    pub status: RunStatus,
    /// Process id of the runner.
    pub pid: i64,
    /// Start time of the runner's process (`/proc/PID/stat` field 22), with `pid` what
    /// identifies it; `None` for runs of a dispatch that did not record it.
    pub runner_start: Option<i64>,
    /// Where its containers run.
    pub runtime: crate::spec::model::RuntimeKind,
    /// Start, seconds since the epoch.
    pub started_at: i64,
    /// End, if it ended.
    pub finished_at: Option<i64>,
    /// Units.
    pub units: i64,
    /// Units per outcome (`running` for units without one yet).
    pub outcomes: BTreeMap<String, i64>,
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
    pub outcome: Option<Outcome>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// PR reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<String>,
    /// What held it back, when it is `skipped` until that allows it (`budget`): `dispatch
    /// resume` of the run starts it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Hold>,
    /// What its agents used, summed over its nodes, when any reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Nodes in order.
    pub nodes: Vec<NodeRow>,
}

/// A node's row.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// Kind.
    pub kind: NodeKind,
    /// Status.
    pub status: NodeStatus,
    /// The outcome it decided for its unit, when it ended one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
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
    /// What its agent runs reported, when it ran an agent whose output dispatch reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRow>,
}

/// What the agent runs of a node reported ([`crate::agents::output::Report`]s, summed).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentRow {
    /// Tokens, turns and cost of all its runs.
    pub usage: Usage,
    /// The latest session or thread id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The model of the latest run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent's last message in its latest run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_message: Option<String>,
    /// The CLI's error in its latest run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tokens the latest session's runs reported, which a continued codex thread's
    /// running totals include.
    #[serde(skip)]
    pub session_tokens: Tokens,
}

impl AgentRow {
    /// Counts one more run, newer than those counted.
    pub fn add(&mut self, report: &Report) {
        self.usage.add_report(report);
        let earlier = self.session.as_deref().map(|id| (id, self.session_tokens));
        if let Some((id, tokens)) = next_session(earlier, report) {
            self.session = Some(id);
            self.session_tokens = tokens;
        }
        if report.model.is_some() {
            self.model.clone_from(&report.model);
        }
        self.final_message.clone_from(&report.final_message);
        self.error.clone_from(&report.error);
    }
}

/// Where a node's files are and where it is.
#[derive(Clone, Debug)]
pub struct NodeLocation {
    /// Its unit's workspace, relative to the state directory.
    pub workspace: String,
    /// Kind (its log is `meta/<kind>.log`).
    pub kind: NodeKind,
    /// Status.
    pub status: NodeStatus,
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
    /// `reset`, `cache`, and for the run `cancel` and `finished`.
    pub kind: String,
    /// Details (the attempt, the container id, the reason, the cache key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The PR earlier runs of a unit published, as the journal has it ([`Db::published_prs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedPr {
    /// The run that last recorded it.
    pub run: String,
    /// Its reference (`local:org/repo#N` or its web URL).
    pub reference: String,
    /// Whose it is; `None` for a remote PR a dispatch before origins were recorded published.
    pub origin: Option<PrOrigin>,
    /// Whether the unit's latest publish left it open: it published the change (it did not
    /// close the PR because the agent changed nothing) and no merge of that run merged it.
    /// The forge may have closed it since.
    pub open: bool,
}

/// A pull request of the local forge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// Its comments, oldest first (a review agent's reviews).
    pub comments: Vec<PrComment>,
}

/// A comment on a pull request of the local forge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrComment {
    /// When it was written (Unix seconds).
    pub at: i64,
    /// The comment (Markdown).
    pub body: String,
}

/// A word of the vocabulary in column `index`.
fn word<T: std::str::FromStr<Err = UnknownWord>>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    text.parse().map_err(|error: UnknownWord| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    })
}

/// An optional word of the vocabulary in column `index`.
fn maybe_word<T: std::str::FromStr<Err = UnknownWord>>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(_) => word(row, index).map(Some),
    }
}

fn get<T: FromSql>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    row.get(index)
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: get(row, 0)?,
        spec_path: get(row, 1)?,
        spec_name: get(row, 2)?,
        status: word(row, 3)?,
        pid: get(row, 4)?,
        started_at: get(row, 5)?,
        finished_at: get(row, 6)?,
        runner_start: get(row, 7)?,
        runtime: {
            let text: String = get(row, 8)?;
            crate::spec::model::RuntimeKind::parse(&text).unwrap_or_default()
        },
        units: 0,
        outcomes: BTreeMap::new(),
    })
}

/// A query of `runs` rows as [`run_row`] reads them, ending in `$rest`.
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT id, spec_path, spec_name, status, pid, started_at, finished_at, runner_start, runtime FROM runs ",
            $rest
        )
    };
}

const RUNS: &str = select_runs!("ORDER BY started_at DESC, id DESC LIMIT ?1");
const RUN: &str = select_runs!("WHERE id = ?1");
const LAST_OF_SPEC: &str =
    select_runs!("WHERE spec_path = ?1 ORDER BY started_at DESC, id DESC LIMIT 1");

impl Db {
    /// Maps a query's error to one naming the file, and a value of the wrong vocabulary to
    /// [`StateError::Unreadable`].
    fn read<T>(&self, result: rusqlite::Result<T>) -> Result<T, StateError> {
        result.map_err(|error| match error {
            rusqlite::Error::FromSqlConversionFailure(index, kind, cause) => {
                match cause.downcast::<UnknownWord>() {
                    Ok(word) => StateError::Unreadable {
                        path: self.path().to_owned(),
                        error: *word,
                    },
                    Err(cause) => self.fail(rusqlite::Error::FromSqlConversionFailure(
                        index, kind, cause,
                    )),
                }
            }
            error => self.fail(error),
        })
    }

    fn with_counts(&self, mut run: RunRow) -> rusqlite::Result<RunRow> {
        let mut statement = self.conn.prepare_cached(
            "SELECT COALESCE(outcome, 'running'), COUNT(*) FROM units WHERE run_id = ?1 GROUP BY 1",
        )?;
        let rows =
            statement.query_map([&run.id], |r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)))?;
        for row in rows {
            let (outcome, count) = row?;
            run.units += count;
            run.outcomes.insert(outcome, count);
        }
        Ok(run)
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StateError> {
        self.read((|| {
            let mut statement = self.conn.prepare(RUNS)?;
            let rows: Vec<RunRow> = statement
                .query_map([limit as i64], run_row)?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(|r| self.with_counts(r)).collect()
        })())
    }

    /// One run by id, or the newest when `id` is `None`.
    pub fn run(&self, id: Option<&str>) -> Result<Option<RunRow>, StateError> {
        self.read((|| {
            let row = match id {
                Some(id) => self.conn.query_row(RUN, [id], run_row).optional()?,
                None => self.conn.query_row(RUNS, [1], run_row).optional()?,
            };
            row.map(|r| self.with_counts(r)).transpose()
        })())
    }

    /// The newest run of the spec at `spec_path` (as runs record it: absolute).
    pub fn last_run_of(&self, spec_path: &str) -> Result<Option<RunRow>, StateError> {
        self.read(
            self.conn
                .query_row(LAST_OF_SPEC, [spec_path], run_row)
                .optional(),
        )
    }

    /// Every unit of a run with its nodes, in plan order.
    pub fn units(&self, run: &str) -> Result<Vec<UnitRow>, StateError> {
        self.read((|| {
            let mut statement = self.conn.prepare(
                "SELECT id, workspace, outcome, reason, pr, held FROM units WHERE run_id = ?1 ORDER BY ord",
            )?;
            let mut units: Vec<UnitRow> = statement
                .query_map([run], |r| {
                    Ok(UnitRow {
                        id: get(r, 0)?,
                        workspace: get(r, 1)?,
                        outcome: maybe_word(r, 2)?,
                        reason: get(r, 3)?,
                        pr: get(r, 4)?,
                        held: maybe_word(r, 5)?,
                        usage: None,
                        nodes: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let index: HashMap<String, usize> = units
                .iter()
                .enumerate()
                .map(|(i, u)| (u.id.clone(), i))
                .collect();
            let mut statement = self.conn.prepare(
                "SELECT n.unit_id, n.id, n.kind, n.status, n.attempts, n.container_id, n.exit_code, n.reason, n.started_at, n.finished_at, \
                 EXISTS (SELECT 1 FROM events e WHERE e.run_id = n.run_id AND e.node_id = n.id AND e.kind = 'cache' \
                         AND e.seq > COALESCE((SELECT MAX(s.seq) FROM events s WHERE s.run_id = n.run_id AND s.node_id = n.id AND s.kind = 'started'), 0)), \
                 n.outcome \
                 FROM nodes n WHERE n.run_id = ?1 ORDER BY n.ord",
            )?;
            let rows = statement.query_map([run], |r| {
                Ok((
                    get::<String>(r, 0)?,
                    NodeRow {
                        id: get(r, 1)?,
                        kind: word(r, 2)?,
                        status: word(r, 3)?,
                        attempts: get(r, 4)?,
                        container_id: get(r, 5)?,
                        exit_code: get(r, 6)?,
                        reason: get(r, 7)?,
                        started_at: get(r, 8)?,
                        finished_at: get(r, 9)?,
                        cached: get(r, 10)?,
                        outcome: maybe_word(r, 11)?,
                        agent: None,
                    },
                ))
            })?;
            let mut at: HashMap<String, (usize, usize)> = HashMap::new();
            for row in rows {
                let (unit, node) = row?;
                if let Some(&i) = index.get(&unit) {
                    at.insert(node.id.clone(), (i, units[i].nodes.len()));
                    units[i].nodes.push(node);
                }
            }
            let mut statement = self.conn.prepare(
                "SELECT node_id, session, model, turns, input_tokens, cached_tokens, output_tokens, cost_usd, cost_estimated, tools, result, final_message, error \
                 FROM usage WHERE run_id = ?1 ORDER BY seq",
            )?;
            let reports = statement.query_map([run], |r| {
                let count = |i| get::<i64>(r, i).map(|n| u64::try_from(n).unwrap_or(0));
                Ok((
                    get::<String>(r, 0)?,
                    Report {
                        session: get(r, 1)?,
                        model: get(r, 2)?,
                        turns: get::<Option<i64>>(r, 3)?.map(|n| u64::try_from(n).unwrap_or(0)),
                        tokens: Tokens {
                            input: count(4)?,
                            cached: count(5)?,
                            output: count(6)?,
                        },
                        cost_usd: get(r, 7)?,
                        cost_estimated: get(r, 8)?,
                        tools: count(9)?,
                        result: get(r, 10)?,
                        final_message: get(r, 11)?,
                        error: get(r, 12)?,
                    },
                ))
            })?;
            for row in reports {
                let (node, report) = row?;
                if let Some(&(u, n)) = at.get(&node) {
                    units[u].nodes[n]
                        .agent
                        .get_or_insert_with(AgentRow::default)
                        .add(&report);
                    units[u]
                        .usage
                        .get_or_insert_with(Usage::default)
                        .add_report(&report);
                }
            }
            Ok(units)
        })())
    }

    /// Where node `node` of run `run` keeps its files, and where it is.
    pub fn node(&self, run: &str, node: &str) -> Result<Option<NodeLocation>, StateError> {
        self.read(
            self.conn
                .query_row(
                    "SELECT u.workspace, n.kind, n.status FROM nodes n JOIN units u ON u.run_id = n.run_id AND u.id = n.unit_id WHERE n.run_id = ?1 AND n.id = ?2",
                    params![run, node],
                    |r| {
                        Ok(NodeLocation {
                            workspace: get(r, 0)?,
                            kind: word(r, 1)?,
                            status: word(r, 2)?,
                        })
                    },
                )
                .optional(),
        )
    }

    /// Every event of a run, oldest first.
    pub fn events(&self, run: &str) -> Result<Vec<EventRow>, StateError> {
        self.read((|| {
            let mut statement = self.conn.prepare(
                "SELECT at_ms, node_id, kind, detail FROM events WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map([run], |r| {
                Ok(EventRow {
                    at_ms: get(r, 0)?,
                    node: get(r, 1)?,
                    kind: get(r, 2)?,
                    detail: get(r, 3)?,
                })
            })?;
            rows.collect()
        })())
    }

    /// Starts of an agent pool (or `pool:model`) since `since` (seconds since the epoch), in
    /// every run of the state directory.
    pub fn starts_since(
        &self,
        pool: &str,
        model: Option<&str>,
        since: i64,
    ) -> Result<u32, StateError> {
        self.read(match model {
            Some(model) => self.conn.query_row(
                "SELECT COUNT(*) FROM starts WHERE pool = ?1 AND model = ?2 AND at >= ?3",
                params![pool, model, since],
                |r| r.get(0),
            ),
            None => self.conn.query_row(
                "SELECT COUNT(*) FROM starts WHERE pool = ?1 AND at >= ?2",
                params![pool, since],
                |r| r.get(0),
            ),
        })
    }

    /// The PR that runs other than `run` (all runs when `None`) published for each unit, by
    /// unit id: the latest PR recorded for it, and whether its latest publish left it open.
    /// One pass over the units of the state directory, oldest run first.
    pub fn published_prs(
        &self,
        run: Option<&str>,
    ) -> Result<HashMap<String, PublishedPr>, StateError> {
        self.read((|| {
            let mut statement = self.conn.prepare(
                "SELECT u.id, u.run_id, u.pr, u.pr_origin, u.outcome, n.outcome FROM units u JOIN runs r ON r.id = u.run_id LEFT JOIN nodes n ON n.run_id = u.run_id AND n.id = u.id || ':publish' AND n.status = 'done' WHERE u.run_id IS NOT ?1 AND (u.pr IS NOT NULL OR n.outcome IS NOT NULL) ORDER BY r.rowid",
            )?;
            let rows = statement.query_map([run], |r| {
                Ok((
                    get::<String>(r, 0)?,
                    get::<String>(r, 1)?,
                    get::<Option<String>>(r, 2)?,
                    maybe_word::<PrOrigin>(r, 3)?,
                    maybe_word::<Outcome>(r, 4)?,
                    maybe_word::<Outcome>(r, 5)?,
                ))
            })?;
            let mut published: HashMap<String, PublishedPr> = HashMap::new();
            for row in rows {
                let (unit, run, pr, origin, outcome, publish) = row?;
                if let Some(reference) = pr {
                    let open = published.get(&unit).is_some_and(|p| p.open);
                    published.insert(
                        unit.clone(),
                        PublishedPr {
                            run,
                            reference,
                            origin,
                            open,
                        },
                    );
                }
                // The latest publish that ended decides whether the PR was left open.
                if let (Some(publish), Some(p)) = (publish, published.get_mut(&unit)) {
                    p.open = publish == Outcome::Changed && outcome != Some(Outcome::Merged);
                }
            }
            Ok(published)
        })())
    }

    /// Every PR of the local forge, newest first.
    pub fn prs(&self) -> Result<Vec<PrRow>, StateError> {
        self.read((|| {
            let mut statement = self.conn.prepare(
                "SELECT number, org, repo, branch, base, title, body, status, run_id, unit_id FROM prs ORDER BY number DESC",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(PrRow {
                    number: get(r, 0)?,
                    org: get(r, 1)?,
                    repo: get(r, 2)?,
                    branch: get(r, 3)?,
                    base: get(r, 4)?,
                    title: get(r, 5)?,
                    body: get(r, 6)?,
                    status: get(r, 7)?,
                    run_id: get(r, 8)?,
                    unit_id: get(r, 9)?,
                    comments: Vec::new(),
                })
            })?;
            let mut prs = rows.collect::<Result<Vec<_>, _>>()?;
            let mut comments = self
                .conn
                .prepare("SELECT at, body FROM pr_comments WHERE pr_number = ?1 ORDER BY seq")?;
            for pr in &mut prs {
                pr.comments = comments
                    .query_map([pr.number], |r| {
                        Ok(PrComment {
                            at: get(r, 0)?,
                            body: get(r, 1)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
            }
            Ok(prs)
        })())
    }
}
