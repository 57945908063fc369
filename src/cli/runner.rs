//! The runner: the `dispatch` process that executes a run (`run`, `resume`, `retry`,
//! `answer`), and what other commands may believe about it.
//!
//! A runner holds its spec's lock ([`crate::state::lock`]) for its whole life ([`take`]), so a
//! second runner of the same spec in the same state directory refuses and names the first,
//! while runs of other specs sharing the directory go on. The kernel drops the lock when the
//! runner dies, however it dies.
//!
//! Whether a run's runner is still there comes from that lock and the journal, never from a
//! bare pid ([`check`]): it is [`Runner::Active`] only when the lock is held and its holder is
//! the process the journal recorded for the run, the same pid with the same start time. Only
//! such a runner is signalled ([`signal`], through a pidfd, so a pid handed out again in the
//! meantime never gets it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::CommandError;
use crate::state::lock::{self, Busy, Holder, Lock};
use crate::state::views::RunRow;

/// Takes the lock of the spec at `spec_path` (canonical, as runs record it) in `state_dir`
/// for run `run`, held until the returned [`Lock`] is dropped; a spec whose lock is taken is
/// refused, naming the run that holds it and what to do.
pub fn take(state_dir: &Path, spec_path: &str, run: &str) -> Result<Lock, CommandError> {
    let path = lock::spec_lock(state_dir, spec_path);
    match Lock::take(&path, &Holder::me(run)) {
        Ok(Ok(lock)) => Ok(lock),
        Ok(Err(busy)) => Err(refusal(state_dir, spec_path, &busy, &path)),
        Err(error) => Err(CommandError::failure(format_args!(
            "cannot take the lock {} of spec {spec_path}: {error}",
            path.display()
        ))),
    }
}

/// The refusal of a runner whose spec's lock `busy` holds.
fn refusal(state_dir: &Path, spec_path: &str, busy: &Busy, path: &Path) -> CommandError {
    let dir = state_dir.display();
    match &busy.holder {
        Some(holder) => CommandError::failure(format_args!(
            "spec {spec_path} is in use by {holder} in {dir}"
        ))
        .hint(format!(
            "Follow it with `dispatch status {run} --state-dir {dir}`, or stop it with `dispatch cancel {run} --state-dir {dir}`; then run again.",
            run = holder.run
        )),
        None => CommandError::failure(format_args!(
            "spec {spec_path} is in use by {busy} (lock {})",
            path.display()
        ))
        .hint(format!(
            "Try again in a moment; `dispatch runs --state-dir {dir}` lists the runs."
        )),
    }
}

/// What is known of a run's runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The run's spec lock is held by the process the journal recorded for the run (the same
    /// pid, started at the same time).
    Active {
        /// Its pid.
        pid: u32,
        /// Its start time (`/proc/PID/stat` field 22).
        start: u64,
    },
    /// No process runs the run: nothing holds its spec's lock, or another run of the spec
    /// does (`other`), which it could not while this run's runner lived.
    Gone {
        /// The run of the spec that holds the lock now, if any.
        other: Option<Holder>,
    },
    /// The spec's lock is held for the run, but not provably by the process the journal
    /// recorded: why.
    Unverified(String),
}

impl Runner {
    /// The word `status --json` and `runs` use for it: `active`, `gone` or `unverified`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Active { .. } => "active",
            Self::Gone { .. } => "gone",
            Self::Unverified(_) => "unverified",
        }
    }
}

/// What the spec lock in `state_dir` and the journal's row say about the runner of `run` (a
/// run the journal has as running).
pub fn check(state_dir: &Path, run: &RunRow) -> Result<Runner, CommandError> {
    let path = lock::spec_lock(state_dir, &run.spec_path);
    let busy = lock::busy(&path).map_err(|error| {
        CommandError::failure(format_args!(
            "cannot read the lock {} of run {}: {error}",
            path.display(),
            run.id
        ))
    })?;
    Ok(match busy {
        None => Runner::Gone { other: None },
        Some(Busy { holder: None }) => Runner::Unverified(format!(
            "the lock of its spec ({}) is held by a process that does not say which run it works for",
            path.display()
        )),
        Some(Busy {
            holder: Some(holder),
        }) if holder.run != run.id => Runner::Gone {
            other: Some(holder),
        },
        Some(Busy {
            holder: Some(holder),
        }) => {
            let recorded = (run.pid, run.runner_start);
            if recorded == (i64::from(holder.pid), Some(holder.start as i64)) {
                Runner::Active {
                    pid: holder.pid,
                    start: holder.start,
                }
            } else {
                Runner::Unverified(format!(
                    "the lock of its spec is held by pid {} (started at tick {}), but the journal records pid {} (started at tick {}) as its runner",
                    holder.pid,
                    holder.start,
                    run.pid,
                    run.runner_start.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
                ))
            }
        }
    })
}

/// Sends `signal` to the runner `pid` started at `start` ([`Runner::Active`]), and to no other
/// process: the pid is opened as a pidfd, its start time checked again, and the signal goes
/// through the pidfd. Says why when it cannot.
pub fn signal(pid: u32, start: u64, signal: libc::c_int) -> Result<(), String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(format!(
            "cannot open process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor was just returned by pidfd_open and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    // The pidfd names the process that had the pid when it was opened; if that is still the
    // runner's start time, it is the runner.
    if lock::process_start(pid) != Some(start) {
        return Err(format!(
            "process {pid} is no longer the runner (it ended, or the pid was handed out again)"
        ));
    }
    // SAFETY: pidfd_send_signal takes a pidfd, a signal, a null siginfo and flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
