//! Locks in a state directory: the spec lock a runner holds for its whole life, and the
//! workspace lock a unit's nodes hold while they use its workspace.
//!
//! A [`Lock`] is an open file description lock (`fcntl` `F_OFD_SETLK`) on a file under
//! `<state>/locks/`, beside the workspaces and never inside one (no container mounts it). The
//! kernel releases it when the process that holds it ends, however it ends (SIGKILL
//! included), so a lock is never stale; the file outlives it and is taken again by the next
//! holder. It is opened close-on-exec, so the git and engine processes a runner starts never
//! inherit it.
//!
//! The file holds its [`Holder`] (run, pid, the process's start time, since when) as JSON,
//! for the message of whoever finds the lock taken. What the file says is believed only while
//! the lock is held and the pid's start time (`/proc/PID/stat`, [`process_start`]) is the
//! one it records: content a dead holder left is never shown as the holder.
//!
//! Paths: [`spec_lock`] keys the spec lock by the spec file's canonical path, as its runs
//! record it (the same file reached by two paths is one lock; two spec files are two);
//! [`workspace_lock`] keys a workspace's lock by the workspace's path in the state directory,
//! which is what makes two units collide whatever specs they come from.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The directory of the locks, inside the state directory.
pub const LOCKS_DIR: &str = "locks";

/// At most this much of a lock file is read (a holder is a line of JSON).
const HOLDER_MAX: u64 = 4096;

/// Who holds a lock: what its file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The run it works for.
    pub run: String,
    /// Its process id.
    pub pid: u32,
    /// Its process's start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub start: u64,
    /// Since when it holds the lock, seconds since the epoch.
    pub since: i64,
}

impl Holder {
    /// This process, working for run `run`, from now on.
    pub fn me(run: &str) -> Self {
        let pid = std::process::id();
        Self {
            run: run.to_owned(),
            pid,
            start: process_start(pid).unwrap_or(0),
            since: super::now(),
        }
    }

    /// Whether the process is alive and is the one that wrote this (its start time agrees).
    pub fn is_alive(&self) -> bool {
        process_start(self.pid) == Some(self.start)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} (pid {}, since {})",
            self.run,
            self.pid,
            super::Civil::of(self.since)
        )
    }
}

/// A lock found taken, with its holder when the file names a live one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Busy {
    /// The holder, `None` when its file does not (yet) name a live process.
    pub holder: Option<Holder>,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(holder) => holder.fmt(f),
            None => f.write_str("a dispatch process that has not said which run it works for"),
        }
    }
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` for `holder` (creating the file and its directory), or says
    /// who holds it. Never waits.
    pub fn take(path: &Path, holder: &Holder) -> std::io::Result<Result<Lock, Busy>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        if !ofd_lock(&file, libc::F_OFD_SETLK, libc::F_WRLCK)? {
            return Ok(Err(Busy {
                holder: read_holder(&file),
            }));
        }
        let mut text = serde_json::to_string(holder).unwrap_or_default();
        text.push('\n');
        file.write_all_at(text.as_bytes(), 0)?;
        file.set_len(text.len() as u64)?;
        Ok(Ok(Lock {
            file,
            path: path.to_owned(),
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first says so explicitly.
        let _ = ofd_lock(&self.file, libc::F_OFD_SETLK, libc::F_UNLCK);
    }
}

/// Whether the lock at `path` is taken, and by whom, without taking it: `None` when it is
/// free (or was never taken).
pub fn busy(path: &Path) -> std::io::Result<Option<Busy>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    // SAFETY: a zeroed flock is a valid value of the C struct.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_GETLK reads and writes the flock it is given, which outlives the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut query) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(
        (query.l_type != libc::F_UNLCK as libc::c_short).then(|| Busy {
            holder: read_holder(&file),
        }),
    )
}

/// Sets (`F_OFD_SETLK`) a whole-file lock of `kind`; `false` when another holds it.
fn ofd_lock(file: &File, command: libc::c_int, kind: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: a zeroed flock is a valid value of the C struct (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl reads the flock it is given, which outlives the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), command, &lock) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(error),
    }
}

/// The holder a lock file names, when it names a live one.
fn read_holder(mut file: &File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(HOLDER_MAX).read_to_string(&mut text).ok()?;
    serde_json::from_str::<Holder>(text.trim())
        .ok()
        .filter(Holder::is_alive)
}

/// The start time of process `pid` (clock ticks after boot, `/proc/PID/stat` field 22), or
/// `None` when there is no such process. With the pid it names one process for good: a pid
/// the kernel hands out again belongs to a process that started later.
pub fn process_start(pid: u32) -> Option<u64> {
    start_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line.
fn start_in_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The lock of the runs of the spec at `spec_path` (its canonical path, as runs record it) in
/// state directory `state_dir`.
pub fn spec_lock(state_dir: &Path, spec_path: &str) -> PathBuf {
    state_dir
        .join(LOCKS_DIR)
        .join("specs")
        .join(format!("{}.lock", spec_key(spec_path)))
}

/// The name a spec's locks go by: 16 hex digits of a digest of its canonical path.
pub fn spec_key(spec_path: &str) -> String {
    let digest = sha2::Sha256::digest(spec_path.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The lock of the workspace `workspace` (relative to the state directory, as units record
/// it) in state directory `state_dir`.
pub fn workspace_lock(state_dir: &Path, workspace: &str) -> PathBuf {
    state_dir.join(LOCKS_DIR).join(format!("{workspace}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::temp;

    #[test]
    fn a_lock_is_taken_once_names_its_holder_and_is_free_again_when_dropped() {
        let dir = temp("lock-once");
        let path = spec_lock(&dir, "/specs/a.yaml");
        assert_eq!(busy(&path).expect("readable"), None, "never taken");
        let me = Holder::me("run-1");
        let lock = Lock::take(&path, &me).expect("io").expect("free");
        // A second open file description of the same process conflicts too.
        let again = Lock::take(&path, &Holder::me("run-2")).expect("io");
        assert_eq!(
            again.err(),
            Some(Busy {
                holder: Some(me.clone())
            })
        );
        assert_eq!(
            busy(&path).expect("readable"),
            Some(Busy { holder: Some(me) })
        );
        drop(lock);
        assert_eq!(busy(&path).expect("readable"), None, "released");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_holder_whose_process_is_not_the_one_it_names_is_not_believed() {
        let dir = temp("lock-stale");
        let path = workspace_lock(&dir, "workspaces/o/r/j");
        let lock = Lock::take(&path, &Holder::me("run-1"))
            .expect("io")
            .expect("free");
        // What a holder that died left, then the lock taken by a process that did not write.
        let stale = Holder {
            start: Holder::me("x").start + 1,
            ..Holder::me("run-0")
        };
        std::fs::write(&path, serde_json::to_string(&stale).unwrap()).unwrap();
        assert_eq!(busy(&path).expect("readable"), Some(Busy { holder: None }));
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name_holds() {
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_in_stat(stat), Some(987_654));
        assert_eq!(start_in_stat("4242 (truncated"), None);
        assert!(
            process_start(std::process::id()).is_some(),
            "this process has one"
        );
    }

    #[test]
    fn lock_paths_stay_out_of_the_workspaces() {
        let state = Path::new("/s");
        assert_eq!(
            workspace_lock(state, "workspaces/o/r/j"),
            Path::new("/s/locks/workspaces/o/r/j.lock")
        );
        assert_ne!(spec_lock(state, "/a.yaml"), spec_lock(state, "/b.yaml"));
        assert!(spec_lock(state, "/a.yaml").starts_with("/s/locks/specs"));
    }
}
