//! Slots shared by the runners of one state directory: a counted semaphore of `n` slots as
//! the files `0`..`n-1` of a directory under `<state>/locks/slots/`, each taken by an
//! exclusive `flock` ([`take`]).
//!
//! What it is for: runs of the one-call form (one per `dispatch` call of the MCP server, or
//! per `dispatch run --repo --task`) are runs of their own, each with its own limits; the
//! slots of their defaults spec's `limits.total` and agent pool make them share those limits
//! across processes.
//!
//! Invariants: the kernel releases a slot when its holder closes it or ends, however it ends,
//! so a slot is never stale; a waiter never polls: it watches the directory with inotify and
//! tries again only when a file there was closed (a holder let go), with the watch set up
//! before it tries, so no release between a try and the wait is missed; it keeps its files
//! open while it waits, so its own tries wake nobody.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A slot held; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    _file: File,
}

/// The slots directory of `name` (a pool, or `total`) of the spec at `spec_path` in
/// `state_dir`.
pub fn dir(state_dir: &Path, spec_path: &str, name: &str) -> PathBuf {
    state_dir
        .join(super::lock::LOCKS_DIR)
        .join("slots")
        .join(super::lock::spec_key(spec_path))
        .join(name)
}

/// Takes one of the `n` slots of `dir`, waiting (blocking the thread) until one is free.
pub fn take(dir: &Path, n: usize) -> io::Result<Slot> {
    std::fs::create_dir_all(dir)?;
    // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned here.
    let inotify = unsafe { OwnedFd::from_raw_fd(raw) };
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mask = libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    if unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut files = (0..n.max(1))
        .map(|i| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(i.to_string()))
        })
        .collect::<io::Result<Vec<File>>>()?;
    loop {
        for i in 0..files.len() {
            // SAFETY: flock on an open fd has no memory-safety preconditions.
            if unsafe { libc::flock(files[i].as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Slot {
                    _file: files.swap_remove(i),
                });
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error);
            }
        }
        let mut events = [0u8; 4096];
        // SAFETY: reads into a buffer of its own length.
        let read = unsafe {
            libc::read(
                inotify.as_raw_fd(),
                events.as_mut_ptr().cast(),
                events.len(),
            )
        };
        if read < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_waiter_gets_the_slot_its_holder_gives_back() {
        let state = crate::state::tests::temp("slots");
        let dir = dir(&state, "/spec.yaml", "total");
        let first = take(&dir, 2).expect("a slot");
        let second = take(&dir, 2).expect("the other slot");
        let (tx, rx) = mpsc::channel();
        let waiting = dir.clone();
        let waiter = std::thread::spawn(move || {
            let slot = take(&waiting, 2).expect("a slot at last");
            tx.send(()).expect("sent");
            slot
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "both slots are held: the third waits"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the waiter wakes when a slot is given back");
        drop(waiter.join().expect("the waiter"));
        drop(second);
    }
}
