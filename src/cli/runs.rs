//! `dispatch runs`, `dispatch status`, `dispatch logs` and `dispatch cancel`: looking at runs
//! (also while one writes, from another terminal) and stopping one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::EXIT_FAILURE;
use crate::spec::problem::plural;
use crate::state::{self, views, Db, RunStatus};

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
    pub fn open(&self) -> Result<(PathBuf, Db), String> {
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
        let db = Db::open(&dir).map_err(|e| e.to_string())?;
        Ok((dir, db))
    }
}

/// Prints an error and gives the failure status.
pub(super) fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    EXIT_FAILURE
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
    let (_, db) = match args.state.open() {
        Ok(open) => open,
        Err(error) => return fail(error),
    };
    let rows = match db.runs(args.limit) {
        Ok(rows) => rows,
        Err(error) => return fail(error),
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
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(error) => return fail(error),
    };
    let run = match db.run(args.run.as_deref()) {
        Ok(Some(run)) => run,
        Ok(None) => {
            return fail(format!(
                "no run {} in {}",
                args.run.as_deref().unwrap_or("at all"),
                dir.display()
            ))
        }
        Err(error) => return fail(error),
    };
    let units = match db.units(&run.id) {
        Ok(units) => units,
        Err(error) => return fail(error),
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
        let outcome = unit.outcome.map_or("running", |o| o.as_str());
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
                node.status.as_str(),
                node.kind.as_str()
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
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(error) => return fail(error),
    };
    let location = match db.node(&args.run, &args.node) {
        Ok(Some(found)) => found,
        Ok(None) => return fail(format!("run {} has no node {}", args.run, args.node)),
        Err(error) => return fail(error),
    };
    let log = dir
        .join(&location.workspace)
        .join("meta")
        .join(format!("{}.log", location.kind));
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
        let running = db
            .node(&args.run, &args.node)
            .ok()
            .flatten()
            .is_some_and(|node| !node.status.is_terminal());
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
    /// Stop the running containers now (their units end cancelled) instead of letting running
    /// nodes finish.
    #[arg(long)]
    pub force: bool,
}

/// Stops a run from another terminal. The runner gets one SIGTERM, which it takes like the
/// first Ctrl-C (nothing new starts, running nodes finish, the rest ends `cancelled`), or with
/// `--force` one SIGUSR1, which it takes like a second Ctrl-C (running containers are stopped
/// too). A runner that is gone has its containers removed and its unfinished nodes marked
/// here.
pub fn cancel(args: CancelArgs) -> u8 {
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(error) => return fail(error),
    };
    let run = match db.run(Some(&args.run)) {
        Ok(Some(run)) => run,
        Ok(None) => return fail(format!("no run {} in {}", args.run, dir.display())),
        Err(error) => return fail(error),
    };
    if run.status != RunStatus::Running {
        println!("run {} already ended ({})", run.id, run.status);
        return 0;
    }
    if runner_alive(run.pid) {
        let signal = if args.force {
            libc::SIGUSR1
        } else {
            libc::SIGTERM
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is the runner's.
        if unsafe { libc::kill(run.pid as i32, signal) } != 0 {
            return fail(format!(
                "cannot signal the runner (pid {}) of run {}: {}",
                run.pid,
                run.id,
                std::io::Error::last_os_error()
            ));
        }
        if args.force {
            println!("asked the runner (pid {}) to stop run {} now; it stops its containers and marks their units cancelled", run.pid, run.id);
        } else {
            println!("asked the runner (pid {}) to stop run {}; running nodes finish, the units that did not start end cancelled (`dispatch cancel --force` stops the containers too)", run.pid, run.id);
        }
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
        Err(error) => return fail(error),
    };
    if let Err(error) = db.cancel_orphans(&run.id, "cancelled by dispatch cancel") {
        return fail(error);
    }
    println!("run {}: the runner was gone; removed {removed} {} and marked its unfinished units cancelled", run.id, plural(removed, "container"));
    0
}

/// Whether the runner process of a run is alive.
pub fn runner_alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}
