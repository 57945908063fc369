//! `--detach`: a command that executes a run (`run`, `resume`, `retry`, `answer`) starts its
//! runner as a process of its own and answers as soon as the run is in the journal, with the
//! run id and its units' states. The runner outlives the command (and an MCP server that
//! started it): a session of its own (`setsid`), no terminal, its output in
//! `<state>/runners/<time>-<pid>.log`.
//!
//! The handshake: the command starts itself again with the same arguments and a pipe as fd 3
//! (named by `DISPATCH_READY_FD`). The runner takes that pipe first thing ([`adopt`]: close on
//! exec, so nothing it starts holds it) and writes the run id into it once the run is recorded
//! and its lock held ([`ready`]), then closes it. A runner that fails before that (an invalid
//! spec, a busy lock, a unit that is not blocked) closes the pipe by exiting: the command then
//! waits for it and ends with its error and exit status, so `--detach` reports the same errors
//! as the command without it. A runner never detaches again: `--detach` in its arguments is
//! inert once it adopted the pipe.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::Serialize;

use super::output::Output;
use super::CommandError;
use crate::state::views::UnitRow;
use crate::state::Db;
use crate::vocab::NodeStatus;

/// The variable naming the ready pipe's fd in a detached runner.
const READY_FD_ENV: &str = "DISPATCH_READY_FD";
/// The fd the ready pipe has in a detached runner.
const READY_FD: i32 = 3;

/// The ready pipe of this process, when it is a detached runner that has not signalled yet.
static PIPE: Mutex<Option<File>> = Mutex::new(None);
/// Whether this process is a detached runner.
static RUNNER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes the ready pipe when this process was started by `--detach` (called first in `main`,
/// before any thread or child exists).
pub fn adopt() {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd == READY_FD)
    else {
        return;
    };
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: fcntl on an fd number has no memory-safety preconditions; a bad fd fails.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return;
    }
    // SAFETY: the fd is open (fcntl succeeded), ours alone, and owned from here on.
    let file = unsafe { File::from_raw_fd(fd) };
    *PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    RUNNER.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether this process is a runner `--detach` started (it does not detach again).
pub fn is_runner() -> bool {
    RUNNER.load(std::sync::atomic::Ordering::SeqCst)
}

/// Tells the command that detached this runner that run `run` is recorded and held; a no-op
/// in any other process, and after the first call.
pub fn ready(run: &str) {
    let pipe = PIPE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut pipe) = pipe {
        // The command may be gone already: the run goes on either way.
        let _ = writeln!(pipe, "{run}");
    }
}

/// What `--detach` answers.
#[derive(Debug, Serialize)]
pub struct Detached {
    /// The run.
    pub run: String,
    /// The runner's process id.
    pub runner_pid: u32,
    /// The run's state directory (what `status`, `logs` and `answer` need to find it).
    pub state_dir: PathBuf,
    /// Where the runner's output goes.
    pub log: PathBuf,
    /// The run's units, in plan order.
    pub units: Vec<DetachedUnit>,
}

/// A unit as `--detach` answers it.
#[derive(Debug, Serialize)]
pub struct DetachedUnit {
    /// Unit id.
    pub id: String,
    /// `queued` (no node started yet), `running`, or its outcome.
    pub state: String,
    /// Its workspace directory.
    pub workspace: PathBuf,
}

/// A unit's state for a caller that does not wait: `queued`, `running`, or its outcome.
fn unit_state(unit: &UnitRow) -> String {
    if let Some(outcome) = unit.outcome {
        return outcome.to_string();
    }
    let started = unit
        .nodes
        .iter()
        .any(|n| !matches!(n.status, NodeStatus::Pending | NodeStatus::Ready));
    match started {
        true => "running".to_owned(),
        false => "queued".to_owned(),
    }
}

/// Starts this command again as a detached runner in `state_dir` and waits until its run is
/// recorded; prints what [`Detached`] holds in `output`'s format (0), or ends with the
/// runner's own error and status when it stopped before.
pub fn detach(state_dir: &Path, output: Output) -> Result<u8, CommandError> {
    if matches!(output, Output::Junit | Output::Markdown) {
        return Err(CommandError::invalid(
            "--detach answers before the run ends: use --output text or json with it, and \
             `dispatch status RUN --output junit|markdown` once it ended",
        ));
    }
    let detached = start(state_dir)?;
    match detached {
        Started::Ready(detached) => {
            match output {
                // Junit and Markdown were refused above.
                Output::Json | Output::Junit | Output::Markdown => println!(
                    "{}",
                    serde_json::to_string_pretty(&detached).unwrap_or_default()
                ),
                Output::Text => {
                    println!(
                        "run {} runs in the background (runner pid {}; its output: {})",
                        detached.run,
                        detached.runner_pid,
                        detached.log.display()
                    );
                    for unit in &detached.units {
                        println!(
                            "  {:<12} {}",
                            unit.state,
                            crate::report::text::shown(&unit.id)
                        );
                    }
                    println!(
                        "follow it with `dispatch status {} --state-dir {}`",
                        detached.run,
                        state_dir.display()
                    );
                }
            }
            Ok(0)
        }
        Started::Failed { status, log } => {
            // The runner's stderr is what the command would have said without --detach.
            eprint!("{}", crate::report::text::shown_lines(&log));
            Ok(status)
        }
    }
}

/// How starting a detached runner went.
pub enum Started {
    /// Its run is recorded.
    Ready(Detached),
    /// It stopped before: its exit status and its output.
    Failed {
        /// Exit status.
        status: u8,
        /// What it printed.
        log: String,
    },
}

/// Starts this command again as a detached runner in `state_dir`; see [`detach`].
pub fn start(state_dir: &Path) -> Result<Started, CommandError> {
    let fail = |what: &str, error: std::io::Error| {
        CommandError::failure(format_args!(
            "cannot start a detached runner ({what}): {error}"
        ))
    };
    let runners = state_dir.join("runners");
    std::fs::create_dir_all(&runners).map_err(|e| fail("its log directory", e))?;
    let log_path = runners.join(format!(
        "{}-{}.log",
        crate::state::now_ms(),
        std::process::id()
    ));
    let log = File::create(&log_path).map_err(|e| fail("its log", e))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(fail("a pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe().map_err(|e| fail("this program's path", e))?;
    let write_fd = write.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| fail("its log", e))?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, dup2) are made.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(write_fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| fail("spawn", e))?;
    drop(write);
    let mut line = String::new();
    let _ = BufReader::new(File::from(read)).read_line(&mut line);
    let run = line.trim().to_owned();
    if run.is_empty() {
        let status = child.wait().map_err(|e| fail("wait", e))?;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Ok(Started::Failed {
            status: status.code().map_or(1, |c| c.clamp(0, 255) as u8),
            log,
        });
    }
    let runner_pid = child.id();
    // Reaped when it ends, so a long-lived caller (the MCP server) keeps no zombie.
    std::thread::spawn(move || child.wait());
    let db = Db::open(state_dir)?;
    let units = db
        .units(&run)?
        .iter()
        .map(|u| DetachedUnit {
            id: u.id.clone(),
            state: unit_state(u),
            workspace: state_dir.join(&u.workspace),
        })
        .collect();
    Ok(Started::Ready(Detached {
        run,
        runner_pid,
        state_dir: state_dir.to_owned(),
        log: log_path,
        units,
    }))
}
