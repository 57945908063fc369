//! `dispatch runs`, `dispatch status`, `dispatch logs` and `dispatch cancel`: looking at runs
//! (also while one writes, from another terminal) and stopping one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::EXIT_FAILURE;
use crate::spec::problem::plural;
use crate::state::{self, views};

/// Where the state directory is.
#[derive(Debug, clap::Args)]
pub struct StateDir {
    /// The state directory (default: `.dispatch/` beside `--spec`, else `./.dispatch`).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The spec whose state directory to use.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

impl StateDir {
    /// Opens the state database, or says why not.
    pub fn open(&self) -> Result<(PathBuf, Connection), String> {
        let dir = match (&self.state_dir, &self.spec) {
            (Some(dir), _) => dir.clone(),
            (None, Some(spec)) => super::run::state_dir(spec, None),
            (None, None) => PathBuf::from(".dispatch"),
        };
        if !dir.join(state::DB_FILE).exists() {
            return Err(format!(
                "no state database in {}; run a spec first, or pass --state-dir or --spec",
                dir.display()
            ));
        }
        let conn = state::open(&dir).map_err(|e| e.to_string())?;
        Ok((dir, conn))
    }
}

/// Prints an error and gives the failure status.
pub(super) fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    EXIT_FAILURE
}

/// Names the state database in a SQLite error.
pub(super) fn sql(dir: &Path) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("state database {}: {e}", dir.join(state::DB_FILE).display())
}

/// Arguments of `dispatch runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDir,
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn counts(run: &views::RunRow) -> String {
    run.outcomes
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lists recent runs.
pub fn runs(args: RunsArgs) -> u8 {
    let (dir, conn) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let rows = match views::runs(&conn, args.limit).map_err(sql(&dir)) {
        Ok(rows) => rows,
        Err(message) => return fail(message),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return 0;
    }
    println!(
        "{:<28} {:<10} {:<20} {:>6}  OUTCOMES",
        "RUN", "STATUS", "SPEC", "UNITS"
    );
    for run in &rows {
        println!(
            "{:<28} {:<10} {:<20} {:>6}  {}",
            run.id,
            run.status,
            run.spec_name,
            run.units,
            counts(run)
        );
    }
    0
}

/// Arguments of `dispatch status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Run id (default: the newest run).
    pub run: Option<String>,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDir,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Shows the units of a run with their nodes.
pub fn status(args: StatusArgs) -> u8 {
    let (dir, conn) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let run = match views::run(&conn, args.run.as_deref()).map_err(sql(&dir)) {
        Ok(Some(run)) => run,
        Ok(None) => {
            return fail(format!(
                "no run {} in {}",
                args.run.as_deref().unwrap_or("at all"),
                dir.display()
            ))
        }
        Err(message) => return fail(message),
    };
    let units = match views::units(&conn, &run.id).map_err(sql(&dir)) {
        Ok(units) => units,
        Err(message) => return fail(message),
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Document<'a> {
            run: &'a views::RunRow,
            units: &'a [views::UnitRow],
        }
        // Streamed: a run of 10,000 units is megabytes of JSON.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let written = serde_json::to_writer_pretty(
            &mut stdout,
            &Document {
                run: &run,
                units: &units,
            },
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
        return if written.is_ok() { 0 } else { EXIT_FAILURE };
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "run {} ({}, spec {}): {} {}: {}",
        run.id,
        run.status,
        run.spec_path,
        run.units,
        plural(run.units as usize, "unit"),
        counts(&run)
    );
    for unit in &units {
        let outcome = unit.outcome.as_deref().unwrap_or("running");
        let _ = writeln!(
            out,
            "\n{:<13} {}{}",
            outcome,
            unit.id,
            unit.pr
                .as_ref()
                .map(|p| format!("  {p}"))
                .unwrap_or_default()
        );
        if let Some(reason) = unit
            .reason
            .as_deref()
            .filter(|_| !matches!(outcome, "changed" | "merged"))
        {
            let _ = writeln!(out, "{:<13} {}", "", reason.lines().next().unwrap_or(""));
        }
        for node in &unit.nodes {
            let attempts = if node.attempts > 1 {
                format!(" (attempt {})", node.attempts)
            } else {
                String::new()
            };
            let cached = if node.cached {
                " (result from the cache)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<9} {:<8}{attempts}{cached}",
                node.status, node.kind
            );
        }
    }
    print!("{out}");
    0
}

/// Arguments of `dispatch logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Run id.
    pub run: String,
    /// Node id, e.g. `fix-tests/core/go-io:agent`.
    pub node: String,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDir,
    /// Keep printing while the node runs.
    #[arg(long, short)]
    pub follow: bool,
}

/// Prints a node's log.
pub fn logs(args: LogsArgs) -> u8 {
    let (dir, conn) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let (workspace, kind, _) = match views::node(&conn, &args.run, &args.node).map_err(sql(&dir)) {
        Ok(Some(found)) => found,
        Ok(None) => return fail(format!("run {} has no node {}", args.run, args.node)),
        Err(message) => return fail(message),
    };
    let log = dir.join(workspace).join("meta").join(format!("{kind}.log"));
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        // The log lives where containers write: a link planted there is not followed.
        let open = || {
            crate::runtime::mounted::std_open_options()
                .read(true)
                .open(&log)
        };
        if let Ok(mut file) = open() {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buffer = Vec::new();
                if file.read_to_end(&mut buffer).is_ok() {
                    offset += buffer.len() as u64;
                    if stdout
                        .write_all(&buffer)
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return 0; // the reader went away (a pipe closed)
                    }
                }
            }
        } else if !args.follow {
            return fail(format!(
                "node {} has no log yet ({})",
                args.node,
                log.display()
            ));
        }
        if !args.follow {
            return 0;
        }
        let running = views::node(&conn, &args.run, &args.node)
            .ok()
            .flatten()
            .is_some_and(|(_, _, status)| {
                matches!(status.as_str(), "pending" | "ready" | "running")
            });
        if !running {
            // One last read catches what was written before the node ended.
            if let Ok(mut file) = open() {
                let _ = file.seek(SeekFrom::Start(offset));
                let _ = std::io::copy(&mut file, &mut stdout);
            }
            return 0;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Arguments of `dispatch cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Run id.
    pub run: String,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDir,
}

/// Stops a run from another terminal: the runner gets the two interrupts Ctrl-C would send
/// (it stops its containers and marks their units `cancelled`); a runner that is gone has its
/// containers removed and its unfinished nodes marked here.
pub fn cancel(args: CancelArgs) -> u8 {
    let (dir, conn) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let run = match views::run(&conn, Some(&args.run)).map_err(sql(&dir)) {
        Ok(Some(run)) => run,
        Ok(None) => return fail(format!("no run {} in {}", args.run, dir.display())),
        Err(message) => return fail(message),
    };
    if run.status != "running" {
        println!("run {} already ended ({})", run.id, run.status);
        return 0;
    }
    if runner_alive(run.pid) {
        for _ in 0..2 {
            // SAFETY: kill has no memory-safety preconditions; the pid is the runner's.
            unsafe {
                libc::kill(run.pid as i32, libc::SIGINT);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("asked the runner (pid {}) to stop run {}; it stops its containers and marks their units cancelled", run.pid, run.id);
        return 0;
    }
    let runtime = match super::async_runtime(false) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
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
    let removed = match removed {
        Ok(n) => n,
        Err(message) => return fail(message),
    };
    let marked = conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         UPDATE nodes SET status = 'cancelled', reason = 'cancelled by dispatch cancel' WHERE run_id = '{id}' AND status IN ('pending', 'ready', 'running');
         UPDATE units SET outcome = 'cancelled', reason = 'cancelled by dispatch cancel' WHERE run_id = '{id}' AND outcome IS NULL;
         UPDATE runs SET status = 'cancelled', finished_at = {now} WHERE id = '{id}';
         COMMIT;",
        id = run.id.replace('\'', "''"),
        now = state::now()
    ));
    if let Err(error) = marked {
        return fail(format!(
            "state database {}: {error}",
            dir.join(state::DB_FILE).display()
        ));
    }
    println!("run {}: the runner was gone; removed {removed} {} and marked its unfinished units cancelled", run.id, plural(removed, "container"));
    0
}

/// Whether the runner process of a run is alive.
pub fn runner_alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}
